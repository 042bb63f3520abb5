"""The converter's errors: both say what is wrong with the checkpoint and how to fix it (the CLI prints them)."""


class ConversionError(ValueError):
    """A checkpoint cannot be converted as asked; the message says what is wrong and how to fix it."""


class KeyMismatchError(ConversionError):
    """The checkpoint's keys or shapes disagree with the variant. Complete lists are kept as attributes."""

    def __init__(self, message, *, unexpected=(), missing=(), mismatched=(), nonzero_dropped=(), conflicts=(),
                 matching_variants=()):
        super().__init__(message)
        self.unexpected, self.missing, self.mismatched = list(unexpected), list(missing), list(mismatched)
        self.nonzero_dropped, self.conflicts = list(nonzero_dropped), list(conflicts)
        self.matching_variants = list(matching_variants)

"""Inference Endpoints handler: copied as `handler.py` into every transformers-format model repo this project pushes.

Serverless inference (the Hub's widget) does not run custom-code models; a dedicated Inference Endpoint does, through
huggingface-inference-toolkit's custom handler convention: the toolkit imports `handler.py` from the repo folder
(with that folder first on `sys.path`), builds `EndpointHandler(<repo folder>)` once, and calls it with each request
body: the JSON-decoded dict `{"inputs": ..., "parameters": {...}}`, or `{"inputs": <PIL image>}` for an image body
(`Content-Type: image/png`, `image/jpeg`, ...). This file imports only what the repo's remote code needs (torch,
transformers, PIL) and loads the model from the repo's own files (`trust_remote_code=True` for MobileCLIP; CLIP and
SigLIP students are plain transformers classes).

Requests:

* zero-shot image classification, the widget's shape: `{"inputs": <base64 image>, "parameters": {"candidate_labels":
  ["a cat", "a dog"] or "a cat, a dog", "hypothesis_template"?: "This is a photo of {}."}}` -> `[{"label", "score"},
  ...]` sorted by score (softmax over the labels; sigmoid for SigLIP), as transformers' zero-shot pipeline returns;
* image embeddings: an image (or a list, or `{"image": ...}` / `{"images": [...]}`) without candidate labels, or
  `"parameters": {"task": "image-embedding"}` -> `{"embeddings": [[...], ...]}` (L2-normalised);
* text embeddings: `{"inputs": {"text": ["a cat", ...]}}`, or a string / list of strings with `"parameters":
  {"task": "text-embedding"}` -> `{"embeddings": [[...], ...]}` (L2-normalised).

Images may be base64 strings (a `data:image/...;base64,` prefix is accepted), raw bytes or PIL images; URLs are not
fetched.
"""

import base64
import binascii
import io

import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

TASKS = ("zero-shot-image-classification", "image-embedding", "text-embedding")
DEFAULT_HYPOTHESIS_TEMPLATE = "This is a photo of {}."  # transformers' zero-shot-image-classification default


def _image(value, where: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, str):
        if value.startswith(("http://", "https://")):
            raise ValueError(f"{where} is a URL; this endpoint fetches nothing: send the image itself, base64-encoded.")
        try:
            value = base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{where} is a string that is not base64; send the image base64-encoded.") from None
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{where} is a {type(value).__name__}; send an image as a base64 string (JSON) or as the "
                         "request body (Content-Type: image/png, image/jpeg, ...).")
    try:
        return Image.open(io.BytesIO(value)).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's ways to refuse data
        raise ValueError(f"{where} does not decode as an image ({type(err).__name__}: {err}).") from None


def _labels(parameters: dict) -> list[str]:
    labels = parameters.get("candidate_labels", parameters.get("candidateLabels"))
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",")]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ValueError(f"parameters.candidate_labels is {labels!r}; give a list of labels or a comma-separated "
                         "string, e.g. \"a cat, a dog\".")
    return labels


class EndpointHandler:
    """huggingface-inference-toolkit's custom handler: `EndpointHandler(path)` once, then `handler(data)` per
    request (module docstring)."""

    def __init__(self, path: str = ""):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        self.sigmoid = "siglip" in self.model.config.model_type  # SigLIP scores each label on its own

    def _tokens(self, texts: list[str]) -> dict:
        # The towers were trained on captions padded to the full context (SigLIP needs it; CLIP pools at its EOS).
        tokens = self.processor(text=texts, padding="max_length", truncation=True, return_tensors="pt",
                                max_length=self.processor.tokenizer.model_max_length)
        return {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)

    @staticmethod
    def _embedding(output) -> list[list[float]]:
        features = getattr(output, "pooler_output", output)  # transformers 5: the projected embedding
        return torch.nn.functional.normalize(features.float(), dim=-1).tolist()

    @torch.no_grad()
    def __call__(self, data: dict):
        if not isinstance(data, dict):
            raise TypeError(f"the request body is a {type(data).__name__}; send a JSON object with \"inputs\".")
        inputs, parameters = data.get("inputs", data), data.get("parameters") or {}
        task = parameters.get("task")
        if task is not None and task not in TASKS:
            raise ValueError(f"parameters.task is {task!r}; choose one of {list(TASKS)}.")
        if isinstance(inputs, dict):
            if "text" in inputs:
                task, inputs = task or "text-embedding", inputs["text"]
            else:
                inputs = inputs.get("images", inputs.get("image", inputs))
        if task is None:
            has_labels = "candidate_labels" in parameters or "candidateLabels" in parameters
            task = "zero-shot-image-classification" if has_labels else "image-embedding"
        if task == "text-embedding":
            texts = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"the text to embed is {inputs!r}; give a string or a list of strings.")
            return {"embeddings": self._embedding(self.model.get_text_features(**self._tokens(texts)))}
        many = isinstance(inputs, list)
        images = [_image(x, f"inputs[{i}]") for i, x in enumerate(inputs)] if many else [_image(inputs, "inputs")]
        if task == "image-embedding":
            return {"embeddings": self._embedding(self.model.get_image_features(pixel_values=self._pixels(images)))}
        labels = _labels(parameters)
        template = parameters.get("hypothesis_template", DEFAULT_HYPOTHESIS_TEMPLATE)
        logits = self.model(pixel_values=self._pixels(images),
                            **self._tokens([template.format(label) for label in labels])).logits_per_image
        scores = logits.float().sigmoid() if self.sigmoid else logits.float().softmax(dim=-1)
        results = [sorted(({"label": label, "score": score} for label, score in zip(labels, row.tolist())),
                          key=lambda item: -item["score"]) for row in scores]
        return results if many else results[0]

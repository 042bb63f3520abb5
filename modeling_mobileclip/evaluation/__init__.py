"""Evaluation of CLIP-style models: zero-shot classification and image<->text retrieval, in Apple's datacomp format.

    python -m modeling_mobileclip.evaluation --model apple/mobileclip-s0 --task zeroshot-classification \\
        --dataset /data/imagenet/val --templates openai-imagenet

(also the `mobileclip-eval` console script).

    cli.py            the command line: arguments, model and processor loading, the result row
    eval_dataset.py   one evaluation split and which columns hold images, labels (class names) and captions
    prompts.py        prompt templates and class names: the shipped sets in data/ or a user's file
    zeroshot.py       encoding, the zero-shot classifier, retrieval, and the metrics (for the CLI and training loops)
    metrics/          the `evaluate` metric modules (zeroshot_accuracy, retrieval_recall), loaded by path
    data/             the 80 OpenAI ImageNet templates and OpenAI's ImageNet-1k class names
    demo.py           an offline zero-shot run through `pipeline("zero-shot-image-classification")`
"""

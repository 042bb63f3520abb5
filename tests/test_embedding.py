"""mobileclip-embed: a folder (recursive) or dataset of images, or a file of texts -> safetensors shards + ids, equal
to the un-fused model's embeddings; skips, resume, bad input."""

import random

import datasets
import numpy as np
import pytest
import torch
from conftest import save_tiny_s0

from dataset_scripts import toy_data
from modeling_mobileclip.embedding import load_embeddings
from modeling_mobileclip.embedding.cli import main as embed_main
from modeling_mobileclip.inference.machine import describe_machine
from modeling_mobileclip.inference.plan import choose_plan
from modeling_mobileclip.embedding.cli import run as embed_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tokenizer):
    """A tiny un-fused model with its processor, and 9 pictures (jpg / png / webp) in nested folders plus one
    damaged .jpg and a .txt that is not an image."""
    root = tmp_path_factory.mktemp("embed")
    model, processor = save_tiny_s0(root / "model", tokenizer)
    rng = random.Random(0)
    pictures = {}
    for i in range(9):
        name = f"{'a/b/' if i % 3 == 0 else 'a/' if i % 3 == 1 else ''}{i}.{('jpg', 'png', 'webp')[i % 3]}"
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        toy_data.render(toy_data.random_scene(rng)).save(root / "images" / name)
        pictures[name] = root / "images" / name
    (root / "images" / "a" / "damaged.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "images" / "notes.txt").write_text("not an image")
    return root, model, processor, pictures


def _expected(model, processor, paths) -> np.ndarray:
    import PIL.Image

    pixels = processor(images=[PIL.Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    with torch.no_grad():  # the un-fused model, its own forward
        return model(pixel_values=pixels, input_ids=torch.zeros(1, 77, dtype=torch.long)).image_embeds.numpy()


def test_a_folder_is_embedded_into_shards_with_ids_and_a_named_skip(inputs, tmp_path, capsys):
    root, model, processor, pictures = inputs
    out = tmp_path / "emb"
    record = embed_main(["--model", str(root / "model"), "--images", str(root / "images"), "--output", str(out),
                         "--batch-size", "3", "--num-workers", "1", "--shard-size", "4", "--no-progress",
                         "--dtype", "float32"])
    printed = capsys.readouterr().err
    assert record["count"] == 9 and record["items"] == 10 and record["skipped_count"] == 1
    assert record["skipped"][0][0] == "a/damaged.jpg" and "skipped 1 unreadable: a/damaged.jpg" in printed
    assert record["shards"] == ["shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    assert record["images_per_second"] > 0 and "images/s" in printed
    assert "Embedding with InferencePlan(device=cpu, dtype=float32" in printed
    ids, embeddings = load_embeddings(out)
    assert ids == sorted(pictures)  # relative paths, sorted; the .txt is not an image
    np.testing.assert_allclose(embeddings, _expected(model, processor, [pictures[i] for i in ids]), atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", *record["shards"]]  # no partial files left

    # Resume: an interrupted run left shard 1 missing and no index.json; only shard 1's 4 items are embedded again.
    kept = (out / "shard-00000.safetensors").read_bytes()
    (out / "shard-00001.safetensors").unlink()
    (out / "index.json").unlink()
    again = embed_main(["--model", str(root / "model"), "--images", str(root / "images"), "--output", str(out),
                        "--batch-size", "3", "--num-workers", "0", "--shard-size", "4", "--no-progress",
                        "--dtype", "float32"])
    assert again["embedded_now"] == 4 and again["count"] == 9
    ids_again, embeddings_again = load_embeddings(out)
    assert ids_again == ids and (out / "shard-00000.safetensors").read_bytes() == kept
    np.testing.assert_allclose(embeddings_again, embeddings, atol=1e-6)  # other batches: float rounding only


def test_a_dataset_and_a_text_file_are_embedded(inputs, tmp_path):
    root, model, processor, pictures = inputs
    names = sorted(pictures)[:4]
    ds = datasets.Dataset.from_dict({"img": [str(pictures[n]) for n in names], "key": names},
                                    features=datasets.Features({"img": datasets.Image(),
                                                                "key": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    embed_main(["--model", str(root / "model"), "--images", str(tmp_path / "ds"), "--output", str(tmp_path / "d"),
                "--id-column", "key", "--num-workers", "0", "--no-progress", "--dtype", "float32"])
    ids, embeddings = load_embeddings(tmp_path / "d")
    assert ids == names
    np.testing.assert_allclose(embeddings, _expected(model, processor, [pictures[n] for n in names]), atol=1e-5)

    texts = ["a red circle", "two blue bars on a grey background", "x"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n")
    record = embed_main(["--model", str(root / "model"), "--texts", str(tmp_path / "texts.txt"), "--output",
                         str(tmp_path / "t"), "--no-progress", "--dtype", "float32"])
    assert record["kind"] == "text" and record["count"] == 3
    ids, embeddings = load_embeddings(tmp_path / "t")
    batch = processor(text=texts, return_tensors="pt")
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], pixel_values=torch.zeros(1, 3, 64, 64)).text_embeds.numpy()
    assert ids == ["0", "1", "2"]
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)


def test_by_default_the_fast_path_the_machine_supports_embeds(inputs, tmp_path, capsys):
    """Without --dtype the tool runs `optimize_for_inference`'s choice for this machine (bf16 with AVX512-BF16 / AMX)
    and says so; the embeddings are stored float32 and each image's nearest fp32 neighbour is itself."""
    root, model, processor, pictures = inputs
    embed_main(["--model", str(root / "model"), "--images", str(root / "images"), "--output", str(tmp_path / "e"),
                "--num-workers", "0", "--no-progress"])
    chosen = choose_plan(model.config, describe_machine(torch.device("cpu"))).dtype
    assert f"Embedding with InferencePlan(device=cpu, dtype={chosen}" in capsys.readouterr().err
    ids, embeddings = load_embeddings(tmp_path / "e")
    assert embeddings.dtype == np.float32
    reference = _expected(model, processor, [pictures[i] for i in ids])
    assert (np.argmax(embeddings @ reference.T, axis=1) == np.arange(len(ids))).all()


def test_embed_bad_input_is_one_error_line(inputs, tmp_path, capsys):
    root = inputs[0]
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("no images here")
    code = embed_run(["--model", str(root / "model"), "--images", str(tmp_path / "empty"), "--output",
                      str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "error: --images" in err and "holds no jpg/jpeg/png/webp files (searched recursively)" in err
    assert "Traceback" not in err and not (tmp_path / "o" / "index.json").exists()
    (tmp_path / "empty.txt").write_text("\n \n")
    assert embed_run(["--model", str(root / "model"), "--texts", str(tmp_path / "empty.txt"), "--output",
                      str(tmp_path / "o")]) == 2
    assert "holds no text" in capsys.readouterr().err
    with pytest.raises(ValueError, match="has no index.json: it is not a finished embedding folder"):
        load_embeddings(tmp_path)

"""load_model for every spec kind, with tiny models made here (nothing is downloaded)."""

from __future__ import annotations

import socket

import boto3
import pytest
import torch
import torchvision

from legx.methods import load_model
from legx.methods.models.demo import DEMO_CLASS_NAMES, DemoCNN
from legx.methods.models.loading import IMAGENET_MEAN, IMAGENET_STD
from legx.pipeline.demo.data import make_demo_arrays


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model("resnet18", weights=None).eval()


def expected_logits(network: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return network((images - mean) / std)


def test_bundled_demo_model_is_accurate_on_unseen_images():
    model = load_model("demo", device="cpu")
    assert not model.training and model.class_names == DEMO_CLASS_NAMES
    assert model.model_id.startswith("demo@")
    images, labels, _ = make_demo_arrays(200, seed=777)  # a seed training never used
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        predictions = model(batch).argmax(1).numpy()
    assert (predictions == labels).mean() >= 0.9


def test_demo_model_takes_any_image_size():
    model = DemoCNN().eval()
    for size in (32, 64, 97):
        assert model(torch.rand(2, 3, size, size)).shape == (2, len(DEMO_CLASS_NAMES))
    assert isinstance(model.last_conv, torch.nn.Conv2d)


def test_torchvision_weights_from_a_local_file_are_normalised_inside(tmp_path):
    network = tiny_resnet()
    torch.save(network.state_dict(), tmp_path / "resnet18.pth")
    model = load_model(f"torchvision:resnet18@{tmp_path / 'resnet18.pth'}", device="cpu")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected_logits(network, images))
    assert model.class_names is not None and len(model.class_names) == 1000
    assert model.model_id.startswith("torchvision:resnet18@")


def test_fine_tuned_torchvision_head_is_sized_from_the_weights(tmp_path):
    torch.manual_seed(0)
    network = torchvision.models.get_model("resnet18", weights=None, num_classes=7).eval()
    torch.save(network.state_dict(), tmp_path / "fine_tuned.pth")
    model = load_model(f"torchvision:resnet18@{tmp_path / 'fine_tuned.pth'}", device="cpu")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected_logits(network, images))
    assert model.class_names is None  # ImageNet's names do not name 7 outputs


def test_default_torchvision_weights_are_identified_without_a_download():
    from legx.methods.models.loading import _default_weights_hash

    # torchvision publishes the sha256 prefix of each weights file in its name.
    assert _default_weights_hash("resnet50") == "11ad3fa6"
    assert _default_weights_hash("vgg19") == "dcbb9e9d"


def test_torchvision_weights_from_s3(s3_bucket, s3_endpoint, tmp_path):
    network = tiny_resnet()
    torch.save(network.state_dict(), tmp_path / "w.pth")
    boto3.client("s3", endpoint_url=s3_endpoint).upload_file(str(tmp_path / "w.pth"), s3_bucket, "models/w.pth")
    model = load_model(f"torchvision:resnet18@s3://{s3_bucket}/models/w.pth", device="cpu")
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected_logits(network, images))


def test_checkpoint_and_torchscript_from_s3_with_storage_options(s3_bucket, s3_endpoint, tmp_path, monkeypatch):
    torch.manual_seed(1)
    demo = DemoCNN().eval()
    torch.save({"arch": "demo", "state_dict": demo.state_dict(), "class_names": list("abcdef")},
               tmp_path / "demo.pt")
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)))
    scripted.save(str(tmp_path / "model.ts"))
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.upload_file(str(tmp_path / "demo.pt"), s3_bucket, "v2/demo.pt")
    client.upload_file(str(tmp_path / "model.ts"), s3_bucket, "v2/model.ts")
    # Only the keyword names the endpoint here.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    options = {"endpoint_url": s3_endpoint}

    model = load_model(f"s3://{s3_bucket}/v2/demo.pt", device="cpu", storage_options=options)
    images = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(images), demo(images))
    assert model.class_names == list("abcdef")
    assert model.model_id.startswith("demo.pt@") and s3_bucket not in model.model_id

    loaded = load_model(f"s3://{s3_bucket}/v2/model.ts", device="cpu", storage_options=options)
    inputs = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(loaded(inputs), scripted(inputs))

    with pytest.raises(ValueError, match="not found"):
        load_model(f"s3://{s3_bucket}/v2/missing.pt", device="cpu", storage_options=options)


def test_legx_checkpoint_and_torchscript_files(tmp_path):
    network = tiny_resnet()
    checkpoint = {"arch": "torchvision:resnet18", "state_dict": network.state_dict(),
                  "class_names": [f"class {i}" for i in range(1000)]}
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    model = load_model(str(tmp_path / "checkpoint.pt"), device="cpu")
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected_logits(network, images))
    assert model.class_names[3] == "class 3"

    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)))
    scripted.save(str(tmp_path / "model.ts"))
    loaded = load_model(str(tmp_path / "model.ts"), device="cpu")
    inputs = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(loaded(inputs), scripted(inputs))


def test_model_ids_change_with_the_weights(tmp_path):
    first, second = DemoCNN(), DemoCNN()
    torch.nn.init.zeros_(second.classifier.bias)
    torch.nn.init.ones_(second.classifier.weight)
    ids = []
    for name, module in (("a.pt", first), ("b.pt", second)):
        torch.save({"arch": "demo", "state_dict": module.state_dict()}, tmp_path / name)
        ids.append(load_model(str(tmp_path / name), device="cpu").model_id)
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("", "non-empty"),
        ("torchvision:", "names no architecture"),
        ("torchvision:no_such_net", "unknown torchvision classifier"),
        ("/no/such/file.pt", "not found"),
        ("resnet50", "not found.*'torchvision:NAME'"),
    ],
)
def test_bad_specs_explain_themselves(spec, message):
    with pytest.raises(ValueError, match=message):
        load_model(spec, device="cpu")


def test_bare_state_dict_and_foreign_files_are_refused(tmp_path):
    torch.save(DemoCNN().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="no architecture"):
        load_model(str(tmp_path / "bare.pt"), device="cpu")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="weights_only"):
        load_model(str(tmp_path / "notes.txt"), device="cpu")
    torch.save({"arch": "demo", "state_dict": {"wrong": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_model(str(tmp_path / "bad.pt"), device="cpu")


class Unpicklable:
    pass


def test_checkpoints_cannot_run_code(tmp_path):
    torch.save({"arch": "demo", "state_dict": {}, "payload": Unpicklable()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_model(str(tmp_path / "evil.pt"), device="cpu")


def test_default_weights_that_cannot_be_downloaded_say_what_to_do(tmp_path, monkeypatch):
    """An empty hub cache and a proxy on a closed local port: torchvision's download fails at
    once, as it does on a machine without internet, and nothing is fetched."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("https_proxy", proxy)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(ValueError) as raised:
        load_model("torchvision:resnet18", device="cpu")
    message = str(raised.value)
    assert "torchvision:resnet18@PATH_OR_URI" in message
    assert torchvision.models.ResNet18_Weights.DEFAULT.url in message
    assert "download" in message


def test_every_model_declares_the_input_size_it_was_trained_on(tmp_path):
    from legx.methods.models.input_size import declared_input_size

    demo = load_model("demo", device="cpu")
    assert demo.input_size == declared_input_size("demo") == 64
    torch.save(tiny_resnet().state_dict(), tmp_path / "resnet18.pth")
    assert load_model(f"torchvision:resnet18@{tmp_path / 'resnet18.pth'}", device="cpu").input_size == 224
    assert declared_input_size("torchvision:resnet18") == 224
    # torchvision's inception_v3 was trained on 299 px crops: the loaded model says so.
    torch.manual_seed(0)
    inception = torchvision.models.get_model("inception_v3", weights=None, aux_logits=True, init_weights=False)
    torch.save(inception.state_dict(), tmp_path / "inception.pth")
    assert load_model(f"torchvision:inception_v3@{tmp_path / 'inception.pth'}", device="cpu").input_size == 299
    # A legx checkpoint may carry its size; a TorchScript archive carries none.
    torch.save({"arch": "demo", "state_dict": DemoCNN().state_dict(), "image_size": 48}, tmp_path / "demo48.pt")
    assert load_model(str(tmp_path / "demo48.pt"), device="cpu").input_size == 48
    assert declared_input_size(str(tmp_path / "demo48.pt")) is None
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)))
    scripted.save(str(tmp_path / "model.ts"))
    assert load_model(str(tmp_path / "model.ts"), device="cpu").input_size is None

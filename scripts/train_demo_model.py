"""Train the bundled demo model on the synthetic shapes and save methods/assets/demo_cnn.pt.

    python scripts/train_demo_model.py [--train 16000] [--test 2000] [--epochs 14]

Train and test images come from disjoint generator seeds (``legx.pipeline.demo.data``), so the test
accuracy it prints is measured on images the model never saw. Label smoothing keeps the softmax
away from saturation: a model that is 99.9999% sure of every image has almost no probability
gradient left for perturbation methods such as LEG (whose default score is the probability) to
measure. The attention pooling of the head is supervised with the object masks (binary
cross-entropy against the mask's coverage of each feature-map cell), and light Gaussian pixel
noise is added to half of the batches so that the model is not brittle to small perturbations.

"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legx.methods.models.demo import DEMO_CLASS_NAMES, DemoCNN  # noqa: E402
from legx.pipeline.demo.data import CLASS_NAMES, make_demo_arrays  # noqa: E402

TRAIN_SEED, TEST_SEED = 1, 2


def to_tensors(count: int, seed: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels, masks = make_demo_arrays(count, seed=seed, image_size=image_size)
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255,
        torch.as_tensor(labels),
        torch.from_numpy(masks)[:, None].float(),
    )


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    predictions = torch.cat([model(images[i : i + 512]).argmax(1) for i in range(0, len(images), 512)])
    return float((predictions == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=16000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "methods" / "assets" / "demo_cnn.pt"))
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args()
    assert CLASS_NAMES == DEMO_CLASS_NAMES, "demo data and model disagree on the classes"

    torch.manual_seed(0)
    started = time.perf_counter()
    train_images, train_labels, train_masks = to_tensors(args.train, TRAIN_SEED, args.image_size)
    test_images, test_labels, _ = to_tensors(args.test, TEST_SEED, args.image_size)
    print(f"generated {args.train} train / {args.test} test images in {time.perf_counter() - started:.0f} s")

    model = DemoCNN()
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    steps = args.epochs * ((args.train + 127) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.learning_rate, total_steps=steps)
    loss_function = nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(args.train)
        total = 0.0
        for start in range(0, args.train, 128):
            batch = order[start : start + 128]
            images, masks = train_images[batch], train_masks[batch]
            flip = torch.rand(len(batch)) < 0.5  # every class is mirror-symmetric in law
            images[flip], masks[flip] = images[flip].flip(-1), masks[flip].flip(-1)
            if torch.rand(()) < 0.5:
                noise_level = 0.05 * torch.rand(len(batch), 1, 1, 1)
                images = (images + noise_level * torch.randn_like(images)).clamp(0, 1)
            logits, attention_logits = model.forward_with_attention(images)
            coverage = nn.functional.adaptive_avg_pool2d(masks, attention_logits.shape[-2:])
            loss = loss_function(logits, train_labels[batch]) + 0.5 * nn.functional.binary_cross_entropy_with_logits(
                attention_logits, coverage
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}: loss {total / args.train:.4f}  "
              f"test accuracy {accuracy(model, test_images, test_labels):.4f}  "
              f"({time.perf_counter() - started:.0f} s)")

    test_accuracy = accuracy(model, test_images, test_labels)
    checkpoint = {
        "arch": "demo",
        "state_dict": model.state_dict(),
        "class_names": list(DEMO_CLASS_NAMES),
        "image_size": args.image_size,
        "test_accuracy": test_accuracy,
        "test_images": args.test,
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    Path(args.out).write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    print(f"test accuracy {test_accuracy:.4f} on {args.test} held-out images; "
          f"saved {args.out} ({len(buffer.getvalue()) / 1e6:.2f} MB, sha256 {digest}) "
          f"after {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The PyTorch baseline of `npm run bench:tta --pytorch`: the same network and images, a plain
modern recipe, Debian's python3-torch on the CPU.

  python3 bench/tta/torch_recipe.py --data <fashion-mnist dir> [--epochs 5] [--threads 2]

<fashion-mnist dir> is what bench/tta/fashion-mnist.mjs writes (train/<class>/*.jpg, test/*.jpg,
test.txt). The recipe (issue 14's): per-channel mean/std normalisation (torchvision's
Normalize, statistics of the training images), random 113 crop of the 128x128 image + mirror,
He init (kaiming_normal_, fan_in; gain 1 for the classifier; biases 0), SGD lr 0.01 momentum 0.9
weight decay 5e-4, batch 64, one epoch of linear warm-up then cosine decay to 0, per iteration.
The network is the project's theano-alexnet at 113 input without dropout: conv1 96 11x11/4 ->
ReLU -> pool 3/2 -> LRN(5, 5e-4, 0.75, 2) -> conv2 256 5x5 pad 2 group 2 -> ReLU -> pool -> LRN ->
conv3 384 3x3 -> conv4 384 group 2 -> conv5 256 group 2 -> pool -> fc6 4096 -> fc7 4096 -> fc8.
torch's LocalResponseNorm divides alpha by size as ONNX does, so alpha 5e-4 is the seed's 1e-4.

Output: one JSON line per epoch on stdout ({"epoch", "top1", "seconds", "images_per_second"}),
the configuration (CPU, threads, BLAS) on stderr first.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def load_images(paths):
    out = np.empty((len(paths), 3, 128, 128), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            a = np.asarray(im.convert('RGB'), dtype=np.uint8)
        if a.shape != (128, 128, 3):
            raise SystemExit(f'{p}: {a.shape}, expected 128x128x3 (write the data with bench/tta/fashion-mnist.mjs)')
        out[i] = a.transpose(2, 0, 1)
    return torch.from_numpy(out)


def load_data(root):
    train_dir = os.path.join(root, 'train')
    classes = sorted(d for d in os.listdir(train_dir) if not d.startswith('.'))
    paths, labels = [], []
    for label, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(train_dir, c))):
            paths.append(os.path.join(train_dir, c, f))
            labels.append(label)
    test_paths, test_labels = [], []
    with open(os.path.join(root, 'test.txt')) as f:
        for line in f:
            if line.strip():
                name, label = line.rsplit(None, 1)
                test_paths.append(os.path.join(root, 'test', name))
                test_labels.append(int(label))
    return load_images(paths), torch.tensor(labels), load_images(test_paths), torch.tensor(test_labels), len(classes)


class TheanoAlexNet(nn.Module):
    def __init__(self, classes, features=1024):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, 4)
        self.conv2 = nn.Conv2d(96, 256, 5, 1, 2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, 1, 1)
        self.conv4 = nn.Conv2d(384, 384, 3, 1, 1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, 1, 1, groups=2)
        self.fc6 = nn.Linear(features, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, classes)
        self.norm = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='linear' if m is self.fc8 else 'relu')
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.norm(F.max_pool2d(F.relu(self.conv1(x)), 3, 2))
        x = self.norm(F.max_pool2d(F.relu(self.conv2(x)), 3, 2))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.max_pool2d(F.relu(self.conv5(x)), 3, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc6(x))
        x = F.relu(self.fc7(x))
        return self.fc8(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', required=True)
    ap.add_argument('--epochs', type=int, default=5)
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=0.01)
    ap.add_argument('--crop', type=int, default=113)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--max-batches', type=int, default=0, help='a quick check: stop each epoch after this many batches')
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    log(f'pytorch {torch.__version__}, CPU {cpu_model()}, {args.threads} threads; '
        f'OPENBLAS_CORETYPE={os.environ.get("OPENBLAS_CORETYPE", "(unset)")} OPENBLAS_L2_SIZE={os.environ.get("OPENBLAS_L2_SIZE", "(unset)")}')
    log(torch.__config__.show().strip())
    log(torch.__config__.parallel_info().strip())
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            log(f"threadpoolctl: {info.get('internal_api')} {info.get('version')} {info.get('architecture', '')} threads {info.get('num_threads')}")
    except ImportError:
        log('threadpoolctl: not installed')

    t0 = time.time()
    x_train, y_train, x_test, y_test, classes = load_data(args.data)
    # torchvision's Normalize(mean, std) with the training set's per-channel statistics.
    flat = x_train.permute(1, 0, 2, 3).reshape(3, -1).double()
    mean = flat.mean(1).float().view(1, 3, 1, 1)
    std = flat.std(1).float().view(1, 3, 1, 1)
    log(f'data: {len(x_train)} train, {len(x_test)} test images, {classes} classes, loaded in {time.time() - t0:.1f} s; '
        f'mean {mean.flatten().tolist()}, std {std.flatten().tolist()}')

    size, crop = x_train.shape[-1], args.crop
    feat_side = (((((crop - 11) // 4 + 1) - 3) // 2 + 1 - 3) // 2 + 1 - 3) // 2 + 1
    model = TheanoAlexNet(classes, 256 * feat_side * feat_side)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    per_epoch = len(x_train) // args.batch
    total, warmup = args.epochs * per_epoch, per_epoch
    schedule = lambda t: (t + 1) / warmup if t < warmup else 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(1, total - warmup)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(args.seed)
    off = (size - crop) // 2
    test_in = ((x_test[:, :, off:off + crop, off:off + crop].float() - mean) / std)

    started = time.time()
    train_seconds = 0.0
    trained_images = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        e0 = time.time()
        order = torch.randperm(len(x_train), generator=gen)
        for b in range(min(per_epoch, args.max_batches) if args.max_batches else per_epoch):
            idx = order[b * args.batch:(b + 1) * args.batch]
            ys = torch.randint(0, size - crop + 1, (len(idx),), generator=gen)
            xs = torch.randint(0, size - crop + 1, (len(idx),), generator=gen)
            flips = torch.rand(len(idx), generator=gen) < 0.5
            batch = torch.empty(len(idx), 3, crop, crop)
            for i, j in enumerate(idx.tolist()):
                img = x_train[j, :, ys[i]:ys[i] + crop, xs[i]:xs[i] + crop]
                batch[i] = img.flip(2) if flips[i] else img
            batch = (batch - mean) / std
            loss = F.cross_entropy(model(batch), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            trained_images += len(idx)
        train_seconds += time.time() - e0
        model.eval()
        correct = 0
        with torch.no_grad():
            for s in range(0, len(test_in), 250):
                correct += (model(test_in[s:s + 250]).argmax(1) == y_test[s:s + 250]).sum().item()
        print(json.dumps({'epoch': epoch, 'top1': correct / len(x_test), 'seconds': time.time() - started,
                          'train_seconds': train_seconds, 'images_per_second': trained_images / train_seconds}), flush=True)


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""The GPU check's anchor (scripts/gpu/check.sh): the device's own PyTorch training AlexNet.

torchvision's AlexNet (or the same layers written out when torchvision is missing), batch
--batch of random 3x224x224 images, SGD momentum 0.9, weight decay 5e-4, lr 0.01, cross-entropy;
fp32 with TF32 off, then with TF32 on (matmul and cuDNN). Prints one JSON line per mode:
{"anchor": "torch", "mode": ..., "imgPerSec": ..., "device": ...}. On a machine without CUDA it
runs on the CPU (to check the script; those figures are not the anchor).
"""
import argparse
import json
import time

import torch
import torch.nn as nn


def alexnet(num_classes=1000):
    try:
        from torchvision.models import alexnet as tv_alexnet
        return tv_alexnet(num_classes=num_classes), 'torchvision'
    except Exception:  # torchvision missing or incompatible: the same architecture
        features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

        class AlexNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.features, self.avgpool, self.classifier = features, nn.AdaptiveAvgPool2d((6, 6)), classifier

            def forward(self, x):
                return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
        return AlexNet(), 'inline (torchvision missing)'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--seconds', type=float, default=15)
    ap.add_argument('--modes', default='fp32-tf32-off,fp32-tf32-on')
    args = ap.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.manual_seed(0)
    model, source = alexnet()
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, 3, 224, 224, device=device) * 60
    y = torch.randint(0, 1000, (args.batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    for mode in args.modes.split(','):
        tf32 = mode.endswith('on')
        if device.type == 'cuda':
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
        for _ in range(3):
            step()
        sync()
        steps, t0 = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - t0 < args.seconds:
            step()
            steps += 1
            if device.type == 'cpu' and steps >= 2:
                break
        sync()
        seconds = (time.perf_counter() - t0) / steps
        print(json.dumps({'anchor': 'torch', 'model': source, 'mode': mode, 'batch': args.batch, 'imgPerSec': round(args.batch / seconds, 1),
                          'stepSeconds': round(seconds, 4), 'device': torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu',
                          'torch': torch.__version__}), flush=True)


if __name__ == '__main__':
    main()

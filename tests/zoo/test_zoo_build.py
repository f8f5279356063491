"""Building the code-defined zoo models: sizes, BatchNorm statistics, outputs that vary."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq import zoo


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name, low, high", [("mobilenet224", 3.3e6, 3.7e6), ("resnet224", 11.5e6, 11.9e6)])
def test_edge224_models_sized_like_real_nets(name, low, high):
    import torch

    spec = zoo.get(name)
    model = spec.build()
    assert low <= _params(model) <= high
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)) for bn in bns)
    assert all(bn.running_mean.abs().max() > 1e-3 for bn in bns)  # folding BN is not a no-op
    x = torch.from_numpy(np.concatenate([f["input"] for f in spec.eval_data(12)]))
    with torch.no_grad():
        logits = model(x)
    assert torch.isfinite(logits).all()
    assert len(set(logits.argmax(1).tolist())) >= 4  # images get different classes
    torch.testing.assert_close(spec.build().state_dict()["features.0.1.running_var" if "mobile" in name else "stem.1.running_var"],
                               model.state_dict()["features.0.1.running_var" if "mobile" in name else "stem.1.running_var"])


def test_tiny_transformer_masks_padding():
    import torch

    spec = zoo.get("tiny_transformer")
    model = spec.build()
    assert 0.3e6 < _params(model) < 1.5e6
    ids, mask = spec.example_inputs()
    length = int(mask.sum())
    with torch.no_grad():
        out = model(ids, mask)
        changed = ids.clone()
        changed[0, length:] = 7  # other ids under padding must not change real positions
        out2 = model(changed, mask)
    assert out.shape == (1, ids.shape[1], 128)
    torch.testing.assert_close(out[:, :length], out2[:, :length])
    assert out[:, :length].std() > 0.5

"""Force products from packed fingerprint Jacobians."""

import torch

from mfbo.fingerprints import GMPParams, featurize_many
from mfbo.training._packed import jacobian_forces, pack_images
from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


def test_one_product_per_batch_gives_the_per_image_forces_and_gradients(oc20_small):
    fps = featurize_many(oc20_small, GMPParams.from_fp_params(SMALL_FP), derivatives=True)
    packed = pack_images(oc20_small, fps, jacobian=True)
    images = [5, 1, 6, 2]  # out of order, as shuffled batches are
    segments = packed.batch_segments(images)
    n_atoms = sum(sl.stop - sl.start for sl, _ in segments)
    grad = torch.randn(n_atoms, packed.features.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = {}
    for batched in (False, True):
        g = grad.clone().requires_grad_(True)
        forces = jacobian_forces(packed, segments, g, batched=batched)
        # The force loss backpropagates through the product into the network's gradient.
        (forces**2).sum().backward()
        out[batched] = (forces.detach(), g.grad)
    assert out[True][0].shape == (n_atoms, 3) and out[True][0].abs().max() > 0
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-12, atol=1e-12)
    # A product for one image pairs atoms of that image only: the forces of image 1 alone match.
    alone = jacobian_forces(packed, packed.batch_segments([1]), grad[segments[1][0]], batched=True)
    torch.testing.assert_close(alone, out[True][0][segments[1][0]], rtol=1e-12, atol=1e-12)

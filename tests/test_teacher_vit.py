"""teacher/vit.py: the official variants, state dicts and position embeddings, features and
the blocks that run, input checks; fp32 features bit-identical to a plain computation and
bf16 close to them, with bf16 weights cast once."""

import pytest
import torch
import torch.nn.functional as F

from checkpoints import reference_pos_embed, relative_error
from l2bt import L2BT
from l2bt.errors import InputError
from l2bt.preprocess import InputGeometry
from l2bt.teacher import TEACHER_VARIANTS, Teacher, load_teacher

# The official architecture facts (facebookresearch/dinov2 hub backbones), written out
# independently of l2bt.teacher.vit: (embed dim, depth, FFN hidden, SwiGLU?).
OFFICIAL = {
    "dinov2_vits14": (384, 12, 1536, False),
    "dinov2_vitb14": (768, 12, 3072, False),
    "dinov2_vitl14": (1024, 24, 4096, False),
    "dinov2_vitg14": (1536, 40, 4096, True),
}


def official_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    dim, depth, hidden, swiglu = OFFICIAL[variant.removesuffix("_reg")]
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 37 * 37 + 1, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, 14, 14),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    if variant.endswith("_reg"):
        shapes["register_tokens"] = (1, 4, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (dim,),
            b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim),
            b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim),
            b + "attn.proj.bias": (dim,),
            b + "ls1.gamma": (dim,),
            b + "ls2.gamma": (dim,),
            b + "norm2.weight": (dim,),
            b + "norm2.bias": (dim,),
        }
        if swiglu:
            shapes |= {
                b + "mlp.w12.weight": (2 * hidden, dim),
                b + "mlp.w12.bias": (2 * hidden,),
                b + "mlp.w3.weight": (dim, hidden),
                b + "mlp.w3.bias": (dim,),
            }
        else:
            shapes |= {
                b + "mlp.fc1.weight": (hidden, dim),
                b + "mlp.fc1.bias": (hidden,),
                b + "mlp.fc2.weight": (dim, hidden),
                b + "mlp.fc2.bias": (dim,),
            }
    return shapes


def test_every_official_variant_is_offered():
    assert set(TEACHER_VARIANTS) == {v + s for v in OFFICIAL for s in ("", "_reg")}


@pytest.mark.parametrize("variant", sorted(OFFICIAL) + [v + "_reg" for v in sorted(OFFICIAL)])
def test_state_dict_has_the_official_keys_and_shapes(variant):
    with torch.device("meta"):  # no memory for the large variants
        teacher = Teacher(variant)
    got = {k: tuple(v.shape) for k, v in teacher.state_dict().items()}
    assert got == official_shapes(variant)


@pytest.mark.parametrize("variant", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_an_official_layout_checkpoint_loads_strictly(variant, tmp_path):
    generator = torch.Generator().manual_seed(1)
    state = {
        k: torch.randn(s, generator=generator) * 0.02 for k, s in official_shapes(variant).items()
    }
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    teacher = load_teacher(variant, weights=str(path))
    loaded = teacher.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert len(teacher.weights_id) == 16 and teacher.weights_id != "random"


@pytest.mark.parametrize("variant", ["dinov2_vits14", "dinov2_vits14_reg"])
@pytest.mark.parametrize("grid", [(37, 37), (74, 74), (16, 16), (16, 24), (31, 9)])
def test_position_embedding_interpolation(variant, grid):
    teacher = load_teacher(variant, weights="random")
    got = teacher.interpolate_pos_encoding(*grid)
    if grid == (37, 37):  # the trained grid is used as it is, with no resampling
        assert got is teacher.pos_embed
        return
    expected = reference_pos_embed(teacher.pos_embed, *grid, variant.endswith("_reg"))
    assert got.shape == (1, grid[0] * grid[1] + 1, teacher.embed_dim)
    assert torch.allclose(got, expected, atol=1e-6)


def test_offset_matters_for_plain_variants():
    # Scale-factor sampling with the 0.1 offset is not the same as resizing to the size.
    teacher = load_teacher("dinov2_vits14", weights="random")
    by_size = reference_pos_embed(teacher.pos_embed, 16, 24, registers=False)
    dim = teacher.embed_dim
    grid = teacher.pos_embed[:, 1:].reshape(1, 37, 37, dim).permute(0, 3, 1, 2)
    plain = F.interpolate(grid, size=(16, 24), mode="bicubic").permute(0, 2, 3, 1)
    assert not torch.allclose(by_size[:, 1:], plain.reshape(1, -1, dim), atol=1e-4)


def test_features_shapes_and_registers_dropped():
    teacher = load_teacher("dinov2_vits14_reg", weights="random")
    x = torch.randn(2, 3, 42, 70)
    early, late = teacher.features(x, layers=(2, 5))
    assert early.shape == late.shape == (2, 3, 5, 384) and early.dtype == torch.float32
    # Final LayerNorm applied (unit weight, zero bias at random init): per-token mean 0, std 1.
    assert torch.allclose(late.mean(-1), torch.zeros(2, 3, 5), atol=1e-4)
    assert torch.allclose(late.std(-1, unbiased=False), torch.ones(2, 3, 5), atol=1e-3)


def test_only_blocks_up_to_the_deepest_layer_run():
    teacher = load_teacher("dinov2_vits14", weights="random")
    ran = []
    for i, block in enumerate(teacher.blocks):
        block.register_forward_hook(lambda *_, i=i: ran.append(i))
    teacher.features(torch.randn(1, 3, 28, 28), layers=(1, 3))
    assert ran == [0, 1, 2, 3]


def test_patch_order_is_row_major():
    # A bright patch in the input changes the token at the same (row, col) the most.
    teacher = load_teacher("dinov2_vits14", weights="random")
    x = torch.zeros(1, 3, 42, 56)
    base = teacher.features(x, layers=(0,))[0]
    x[:, :, 14:28, 42:56] = 5.0  # patch row 1, col 3
    changed = (teacher.features(x, layers=(0,))[0] - base).norm(dim=-1)[0]
    assert divmod(int(changed.argmax()), 4) == (1, 3)


def test_random_weights_are_the_same_in_every_process():
    torch.manual_seed(123)
    a = load_teacher("dinov2_vits14", weights="random").state_dict()
    torch.manual_seed(456)
    b = load_teacher("dinov2_vits14", weights="random").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "shape,layers,match",
    [
        ((1, 3, 30, 28), (7, 11), "multiples of 14"),
        ((1, 3, 28, 28), (7, 12), "block indices"),
        ((1, 3, 28, 28), (-1,), "block indices"),
        ((1, 1, 28, 28), (7,), r"\(B, 3, H, W\)"),
    ],
)
def test_bad_inputs_are_input_errors(shape, layers, match):
    teacher = load_teacher("dinov2_vits14", weights="random")
    with pytest.raises(InputError, match=match):
        teacher.features(torch.zeros(shape), layers=layers)


def test_unknown_variant():
    with pytest.raises(InputError, match="unknown teacher"):
        load_teacher("dinov2_vitx14", weights="random")


@pytest.mark.usefixtures("feature_cache")
@pytest.mark.parametrize("variant", ["dinov2_vits14", "dinov2_vits14_reg"])
@pytest.mark.parametrize("height,width", [(460, 1130), (1540, 645), (1056, 4224)])
def test_position_embeddings_of_aspect_grids_follow_the_official_formula(variant, height, width):
    teacher = load_teacher(variant, weights="random")
    grid = InputGeometry.aspect(height, width, 518).grid
    assert grid[0] != grid[1]
    expected = reference_pos_embed(teacher.pos_embed, *grid, variant.endswith("_reg"))
    assert torch.allclose(teacher.interpolate_pos_encoding(*grid), expected, atol=1e-6)


# bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.002); through 12 blocks the
# teacher's features stay within 2 % (relative Frobenius error per layer; measured
# 0.3-0.4 % for ViT-S/14 at 56 px, 0.5-0.6 % for ViT-B/14-reg at 1036 px).
TEACHER_BF16_RTOL = 0.02


@pytest.fixture(scope="module")
def teachers():
    return {v: load_teacher(v, weights="random") for v in ("dinov2_vits14", "dinov2_vits14_reg")}


def plain_features(teacher, x, layers):
    """The float32 teacher as first written: every block restated with plain operations."""
    tokens = teacher.prepare_tokens(x)
    heads = teacher.arch.num_heads
    kept = {}
    for index in range(max(layers) + 1):
        block = teacher.blocks[index]
        batch, n, dim = tokens.shape
        h = F.layer_norm(tokens, (dim,), block.norm1.weight, block.norm1.bias, 1e-6)
        qkv = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias)
        q, k, v = qkv.reshape(batch, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, n, dim)
        attended = F.linear(attended, block.attn.proj.weight, block.attn.proj.bias)
        tokens = tokens + attended * block.ls1.gamma
        h = F.layer_norm(tokens, (dim,), block.norm2.weight, block.norm2.bias, 1e-6)
        h = F.linear(
            F.gelu(F.linear(h, block.mlp.fc1.weight, block.mlp.fc1.bias)),
            block.mlp.fc2.weight,
            block.mlp.fc2.bias,
        )
        tokens = tokens + h * block.ls2.gamma
        if index in layers:
            patches = teacher.norm(tokens)[:, 1 + teacher.arch.num_register_tokens :]
            kept[index] = patches.reshape(batch, x.shape[2] // 14, x.shape[3] // 14, dim)
    return tuple(kept[i] for i in layers)


@pytest.mark.parametrize("variant", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_fp32_teacher_is_bit_identical_to_the_plain_computation(teachers, variant):
    teacher = teachers[variant]
    x = torch.randn(2, 3, 42, 70, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        teacher.features(x, (3, 11), "bf16")  # a bf16 copy exists: fp32 must not use it
        got = teacher.features(x, (3, 11))
        expected = plain_features(teacher, x, (3, 11))
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("variant", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_bf16_teacher_features_are_close_to_fp32(teachers, variant):
    teacher = teachers[variant]
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    fp32 = teacher.features(x, (7, 11))
    bf16 = teacher.features(x, (7, 11), "bf16")
    for a, b in zip(bf16, fp32, strict=True):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert 0 < relative_error(a, b) < TEACHER_BF16_RTOL


def test_bf16_weights_are_cast_once_and_follow_weight_changes():
    teacher = load_teacher("dinov2_vits14", weights="random")
    keys = set(teacher.state_dict())
    x = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    before = teacher.features(x, (1,), "bf16")[0]
    copy = teacher.blocks_in(torch.bfloat16)
    assert teacher.blocks_in(torch.bfloat16) is copy  # reused, not cast again
    assert copy[0].attn.qkv.weight.dtype == torch.bfloat16
    assert copy[0].norm1.weight.dtype == torch.float32  # LayerNorm stays float32
    assert set(teacher.state_dict()) == keys  # the copy is not part of the checkpoint
    state = {k: v * 1.5 if "fc1" in k else v for k, v in teacher.state_dict().items()}
    teacher.load_state_dict(state)
    assert teacher.blocks_in(torch.bfloat16) is not copy
    after = teacher.features(x, (1,), "bf16")[0]
    assert relative_error(after, teacher.features(x, (1,))[0]) < TEACHER_BF16_RTOL
    assert not torch.allclose(after, before)


def test_unknown_precision_is_an_input_error(teachers, tmp_path):
    with pytest.raises(InputError, match="precision"):
        teachers["dinov2_vits14"].features(torch.zeros(1, 3, 14, 14), (0,), "fp16")
    with pytest.raises(InputError, match="precision"):  # checked before any work
        L2BT.fit([tmp_path / "missing.png"], precision="fp16")

"""Checkpoints: named networks each checked by hash and key set, a network shared by
reference, format-1 files read unchanged, and the shipped demo checkpoints."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from bench.codecs.checkpoint import (
    VERSION,
    Checkpoint,
    CheckpointError,
    Network,
    int8_weights,
    load_checkpoint,
    load_strictly,
    state_hash,
    stored_state_hash,
)
from bench.codecs.encodec.codec import EncodecCodec
from bench.codecs.encodec.entropy import EntropyLM
from bench.codecs.encodec.model import CONFIGS, EncodecModel
from bench.codecs.hificodec.codec import HiFiCodecCodec
from torch import nn

LM_CONFIG = {"n_q": 16, "card": 1024, "dim": 16, "num_heads": 2, "num_layers": 1}


def linear(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def save(path, kind: str = "toy", **networks: nn.Module) -> dict[str, str]:
    """``networks`` in one checkpoint of codec ``kind``; returns their hashes."""
    return Checkpoint(
        kind, {name: Network({}, module.state_dict()) for name, module in networks.items()}
    ).save(path)


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_named_networks_round_trip_each_with_its_hash(tmp_path):
    codec, lm, vocoder = linear(0), linear(1), linear(2)
    hashes = save(tmp_path / "model.pt", codec=codec, lm=lm, vocoder=vocoder)
    loaded = load_checkpoint(tmp_path / "model.pt", "toy")
    assert set(loaded.networks) == {"codec", "lm", "vocoder"}
    for name, module in (("codec", codec), ("lm", lm), ("vocoder", vocoder)):
        network = loaded.network(name)
        assert network.hash == hashes[name] == state_hash(module.state_dict())
        assert_same_weights(network.state_dict, module.state_dict())
    with pytest.raises(CheckpointError, match="expected a network 'flow', got codec, lm, vocoder"):
        loaded.network("flow")


def test_a_tampered_network_is_refused_by_name(tmp_path):
    save(tmp_path / "model.pt", codec=linear(0), vocoder=linear(1))
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["networks"]["vocoder"]["state_dict"]["weight"].add_(1e-3)
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="network 'vocoder': weights do not match"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_the_key_set_is_checked_per_network(tmp_path):
    save(tmp_path / "model.pt", codec=linear(0), lm=nn.Linear(3, 2, bias=False))
    loaded = load_checkpoint(tmp_path / "model.pt")
    load_strictly(linear(5), loaded.network("codec").state_dict, "model.pt (codec)")
    with pytest.raises(CheckpointError, match=r"model.pt \(lm\): .*missing \['bias'\]"):
        load_strictly(linear(5), loaded.network("lm").state_dict, "model.pt (lm)")


def test_a_shared_network_is_stored_once_and_checked_where_it_is_used(tmp_path):
    """Two codecs share one vocoder file: neither holds its weights, both load them, and a
    vocoder changed after they referenced it is refused by both."""
    vocoder = linear(2)
    save(tmp_path / "shared" / "vocoder.pt", kind="vocoder", vocoder=vocoder)
    for index, name in enumerate(("a", "b")):
        Checkpoint(
            "toy",
            {
                "codec": Network({}, linear(index).state_dict()),
                "vocoder": Checkpoint.reference(tmp_path / "shared" / "vocoder.pt", "vocoder"),
            },
        ).save(tmp_path / "shared" / f"{name}.pt")
    payload = torch.load(tmp_path / "shared" / "a.pt", weights_only=True)
    assert payload["networks"]["vocoder"]["reference"] == "vocoder.pt"
    assert "state_dict" not in payload["networks"]["vocoder"]

    # The files move together: the reference is relative to the referring file.
    shutil.move(tmp_path / "shared", tmp_path / "moved")
    for name in ("a", "b"):
        loaded = load_checkpoint(tmp_path / "moved" / f"{name}.pt")
        assert_same_weights(loaded.network("vocoder").state_dict, vocoder.state_dict())
    # Saved again elsewhere, the reference still points at the same file.
    load_checkpoint(tmp_path / "moved" / "a.pt").save(tmp_path / "elsewhere" / "a.pt")
    again = load_checkpoint(tmp_path / "elsewhere" / "a.pt").network("vocoder")
    assert again.reference.path == (tmp_path / "moved" / "vocoder.pt").resolve()

    save(tmp_path / "moved" / "vocoder.pt", kind="vocoder", vocoder=linear(3))
    for name in ("a", "b"):
        with pytest.raises(CheckpointError, match="'vocoder' changed since"):
            load_checkpoint(tmp_path / "moved" / f"{name}.pt")
    (tmp_path / "moved" / "vocoder.pt").unlink()
    with pytest.raises(CheckpointError, match="shared from .*vocoder.pt: .*no such file"):
        load_checkpoint(tmp_path / "moved" / "a.pt")


def test_a_changed_shared_network_is_not_saved_as_a_reference(tmp_path):
    save(tmp_path / "vocoder.pt", kind="vocoder", vocoder=linear(2))
    shared = Checkpoint.reference(tmp_path / "vocoder.pt", "vocoder")
    shared.state_dict = {key: value * 2 for key, value in shared.state_dict.items()}
    with pytest.raises(CheckpointError, match="changed since it was read"):
        Checkpoint("toy", {"vocoder": shared}).save(tmp_path / "a.pt")


def int8_network() -> Network:
    """A conv whose output channels differ in range by 10^4, stored as int8."""
    torch.manual_seed(0)
    conv = nn.Conv1d(16, 1024, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.logspace(-4, 0, 1024).reshape(-1, 1, 1))
    network = Network({}, conv.state_dict())
    network.store_as_int8(int8_weights(network.state_dict))
    return network


def test_int8_weights_round_trip_within_half_a_step_per_channel(tmp_path):
    network = int8_network()
    original = network.state_dict["weight"].clone()
    assert set(network.int8_scales) == {"weight"}  # not the 1-D bias
    hashes = Checkpoint("toy", {"codec": network}).save(tmp_path / "model.pt")

    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["networks"]["codec"]["state_dict"]["weight"].dtype == torch.int8
    loaded = load_checkpoint(tmp_path / "model.pt").network("codec")
    assert loaded.hash == hashes["codec"]
    weight = loaded.state_dict["weight"]
    assert weight.dtype == torch.float32
    # Half a step of each channel's own scale: a per-tensor scale would erase the small ones.
    step = original.abs().amax(dim=(1, 2), keepdim=True) / 127
    assert ((weight - original).abs() <= step / 2 + 1e-9).all()
    assert torch.equal(loaded.state_dict["bias"], network.state_dict["bias"])


def test_a_loaded_int8_network_saves_back_to_the_same_bytes(tmp_path):
    """Re-saved or referenced, an int8 network keeps its hash: the referring file checks it."""
    Checkpoint("vocoder", {"vocoder": int8_network()}).save(tmp_path / "vocoder.pt")
    loaded = load_checkpoint(tmp_path / "vocoder.pt")
    first = loaded.network("vocoder").hash
    assert loaded.save(tmp_path / "again.pt")["vocoder"] == first
    shared = Checkpoint.reference(tmp_path / "vocoder.pt", "vocoder")
    Checkpoint("toy", {"vocoder": shared}).save(tmp_path / "codec.pt")
    assert load_checkpoint(tmp_path / "codec.pt").network("vocoder").hash == first


def test_a_tampered_or_malformed_int8_scale_is_refused(tmp_path):
    Checkpoint("toy", {"codec": int8_network()}).save(tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    entry = payload["networks"]["codec"]
    entry["int8_scales"]["weight"].mul_(2)
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="'codec': weights do not match"):
        load_checkpoint(tmp_path / "tampered.pt")
    # Rehashed, so that only the shape is wrong: one scale per tensor instead of per channel.
    entry["int8_scales"]["weight"] = entry["int8_scales"]["weight"][:1]
    entry["hash"] = stored_state_hash(entry["state_dict"], entry["int8_scales"])
    torch.save(payload, tmp_path / "malformed.pt")
    with pytest.raises(CheckpointError, match=r"expected 'weight' as int8 with one scale per"):
        load_checkpoint(tmp_path / "malformed.pt")


def test_codebooks_small_and_one_dimensional_tensors_stay_floating():
    state = {
        "layers.0._codebook.embed": torch.randn(256, 16),
        "proj.weight": torch.randn(64, 64),
        "small.weight": torch.randn(16, 16),
        "norm.weight": torch.randn(8192),
        "steps": torch.zeros(64, 64, dtype=torch.long),
    }
    assert int8_weights(state) == ("proj.weight",)


def test_checkpoints_referencing_each_other_are_refused(tmp_path):
    save(tmp_path / "a.pt", vocoder=linear(0))
    save(tmp_path / "b.pt", vocoder=linear(0))
    # a's vocoder refers to b's and b's to a's: the same weights, so both hashes match.
    for source, target in (("a", "b"), ("b", "a")):
        payload = torch.load(tmp_path / f"{source}.pt", weights_only=True)
        entry = payload["networks"]["vocoder"]
        payload["networks"]["vocoder"] = {"reference": f"{target}.pt", "hash": entry["hash"]}
        torch.save(payload, tmp_path / f"{source}.pt")
    with pytest.raises(CheckpointError, match="references deep"):
        load_checkpoint(tmp_path / "a.pt")


def format_1_payload(model: EncodecModel, lm: EntropyLM | None) -> dict:
    """What `Checkpoint.save` wrote before format 2: one network, the LM in extra_states."""
    payload = {
        "format": "codec-bench checkpoint",
        "version": 1,
        "codec": "encodec",
        "config": {**model.config.to_json(), "extra": {}},
        "state_dict": model.state_dict(),
        "step": 3,
        "extra_states": {},
        "metadata": {"note": "format 1"},
        "versions": {"torch": "2.4.0"},
        "hash": state_hash(model.state_dict()),
    }
    if lm is not None:
        payload["extra_states"]["lm"] = lm.state_dict()
        payload["metadata"]["lm_config"] = LM_CONFIG
    return payload


def test_a_format_1_checkpoint_loads_with_the_same_weights_and_decodes_alike(tmp_path):
    torch.manual_seed(0)
    model, lm = EncodecModel(CONFIGS["tiny"]), EntropyLM(**LM_CONFIG)
    torch.save(format_1_payload(model, lm), tmp_path / "v1.pt")
    Checkpoint(
        "encodec",
        {
            "codec": Network(model.config.to_json(), model.state_dict()),
            "lm": Network(LM_CONFIG, lm.state_dict()),
        },
        step=3,
    ).save(tmp_path / "v2.pt")
    old, new = load_checkpoint(tmp_path / "v1.pt", "encodec"), load_checkpoint(tmp_path / "v2.pt")
    assert old.step == 3 and old.metadata == {"note": "format 1"} and old.training_state == {}
    for name in ("codec", "lm"):
        assert old.network(name).hash == new.network(name).hash
    assert old.network("lm").config == LM_CONFIG
    audio = torch.sin(2 * math.pi * 220 * torch.arange(12000) / 24000)[None] * 0.3
    for entropy_coding in (False, True):
        first = EncodecCodec(tmp_path / "v1.pt", entropy_coding=entropy_coding)
        second = EncodecCodec(tmp_path / "v2.pt", entropy_coding=entropy_coding)
        assert first.checkpoint_hash == second.checkpoint_hash
        encoded = first.encode(audio, 3.0)
        assert encoded.payload == second.encode(audio, 3.0).payload
        assert torch.equal(first.decode(encoded), second.decode(encoded))
    # Format 1 checked its one recorded hash; it still does.
    payload = format_1_payload(model, None)
    payload["hash"] = "0" * 64
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="network 'codec': weights do not match"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_an_unknown_format_version_is_refused(tmp_path):
    save(tmp_path / "model.pt", codec=linear(0))
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["version"] == VERSION == 2
    torch.save({**payload, "version": 3}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="expected checkpoint version 1 or 2, got 3"):
        load_checkpoint(tmp_path / "future.pt")


@pytest.mark.parametrize("codec_class", [EncodecCodec, HiFiCodecCodec])
def test_the_shipped_demo_checkpoints_are_current_and_match_their_cards(codec_class):
    """Converted to format 2 with their weights untouched: the hash each model card states
    (written for the format-1 files) is the codec network's."""
    path = codec_class.demo_checkpoint
    assert torch.load(path, weights_only=True)["version"] == VERSION
    checkpoint = load_checkpoint(path, codec_class.name)
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert f"`{checkpoint.network('codec').hash}`" in card
    assert "extra" not in checkpoint.network("codec").config

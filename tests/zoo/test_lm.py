"""The zoo's decoder language model (edgeq.zoo.lm): exported with its KV cache, generated from
and scored by edgeq.runtime.generate (no torch), quantized weight-only to int4 with its tokenizer
kept."""

from __future__ import annotations

import numpy as np
import pytest

from ortutil import cli_ok


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    from edgeq.exporter import export

    path = tmp_path_factory.mktemp("lm") / "tiny_lm.onnx"
    export("tiny_lm", path)
    return str(path)


@pytest.fixture(scope="module")
def held_out():
    from edgeq.zoo.lm import text

    return text("eval")[:6000]


def test_decoding_with_the_cache_matches_the_full_sequence_and_torch(lm_path):
    import torch

    from edgeq.runtime.generate import DecoderLM
    from edgeq.zoo import get

    lm = DecoderLM(lm_path)
    prompt = lm.encode("def fib(n):\n    ")
    new = list(lm.generate(prompt, 24))
    full, _ = lm.step(np.asarray([prompt + new[:-1]]))
    assert full[0, len(prompt) - 1:].argmax(-1).tolist() == new  # each cached step = the full pass
    model = get("tiny_lm").build()
    ids = torch.tensor([prompt])
    empty = torch.zeros((4, 1, 6, 0, 32))  # (layers, batch, heads, past, head_dim)
    with torch.no_grad():
        for _ in range(24):  # torch's own greedy decoding, no cache
            logits, _, _ = model(ids, empty, empty)
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    assert ids[0, len(prompt):].tolist() == new
    assert lm.times.decode_tokens_per_s > 0 and lm.times.prompt_tokens == len(prompt)


def test_trained_model_predicts_held_out_documentation(lm_path, held_out):
    from edgeq.runtime.generate import DecoderLM

    lm = DecoderLM(lm_path)
    ppl = lm.perplexity(lm.encode(held_out))
    # uniform over 256 bytes would be 256; measured 4.58 on this text (the committed checkpoint)
    assert ppl < 6.0, ppl


def test_int4_weight_only_keeps_the_tokenizer_and_most_of_the_perplexity(lm_path, held_out, tmp_path, capsys):
    import onnx

    from edgeq.runtime.generate import DecoderLM
    from edgeq.zoo import get

    out = tmp_path / "lm.int4.onnx"
    calib = get("tiny_lm").calibration_data(16)
    import edgeq
    from edgeq.config import QuantConfig

    edgeq.quantize(lm_path, QuantConfig(mode="weight-only", weights="int4"), calib).save(str(out))
    proto = onnx.load(out)
    assert {p.key: p.value for p in proto.metadata_props}["edgeq.tokenizer"] == "bytes"
    assert sum(n.op_type == "MatMulNBits" for n in proto.graph.node) == 17  # 4 blocks x 4 + the head
    fp32 = DecoderLM(lm_path).perplexity(list(held_out.encode()))
    int4 = DecoderLM(str(out)).perplexity(list(held_out.encode()))
    assert int4 < fp32 * 1.05, (fp32, int4)  # measured 4.604 vs 4.582 (1.005x) with GPTQ
    text = cli_ok(["generate", str(out), "--prompt", "for i in range(", "--max-new-tokens", "8"], capsys)
    assert text.startswith("for i in range(") and len(text) > len("for i in range(")


def test_cli_perplexity_and_clear_errors(lm_path, held_out, tmp_path, capsys):
    from edgeq.cli.main import main

    path = tmp_path / "t.txt"
    path.write_text(held_out[:2000], encoding="utf-8")
    out = cli_ok(["perplexity", lm_path, "--text", str(path)], capsys)
    assert out.startswith("perplexity ") and f"over {len(held_out[:2000].encode())} tokens" in out  # UTF-8 bytes
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00abc")
    for argv, code, words in ((["perplexity", lm_path, "--text", str(tmp_path / "none.txt")], 2, "does not exist"),
                              (["perplexity", lm_path, "--text", str(tmp_path / "bad.txt")], 2, "not UTF-8")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == code and words in err and "Traceback" not in err


def test_a_model_without_a_cache_is_refused_in_one_line(tmp_path, capsys):
    import onnx

    from edgeq.cli.main import main
    from passes.nets import MLP_NET, build

    rng = np.random.default_rng(0)
    path = tmp_path / "mlp.onnx"
    onnx.save(build(MLP_NET, {"M1": rng.normal(0, 1, (32, 32)), "MB1": rng.normal(0, 1, 32),
                              "G": rng.normal(0, 1, (10, 32)), "GB": rng.normal(0, 1, 10)}), path)
    with pytest.raises(SystemExit) as e:
        main(["generate", str(path), "--prompt", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "not a decoder with a KV cache" in err and len(err.strip().splitlines()) == 1


def test_bench_measures_a_decoder_in_tokens_per_second(lm_path, tmp_path, capsys):
    import json

    from edgeq.cli.main import main
    from passes.nets import MLP_NET, build

    out = tmp_path / "bench.json"
    cli_ok(["bench", lm_path, "--prompt-tokens", "16", "--new-tokens", "8", "--json", str(out)], capsys)
    (row,) = json.loads(out.read_text())["results"]
    assert row["prompt_tokens"] == 16 and row["new_tokens"] == 8
    assert row["ttft_ms"] > 0 and row["decode_tokens_per_s"] > 0 and row["prefill_tokens_per_s"] > 0
    assert row["peak_rss_bytes"] is None or row["peak_rss_bytes"] > row["file_bytes"]  # session included
    import onnx

    rng = np.random.default_rng(0)
    mlp = tmp_path / "mlp.onnx"
    onnx.save(build(MLP_NET, {"M1": rng.normal(0, 1, (32, 32)), "MB1": rng.normal(0, 1, 32),
                              "G": rng.normal(0, 1, (10, 32)), "GB": rng.normal(0, 1, 10)}), mlp)
    with pytest.raises(SystemExit) as e:
        main(["bench", lm_path, str(mlp)])
    assert e.value.code == 2 and "apart from other models" in capsys.readouterr().err


def test_max_ppl_increase_picks_8_bit_layers_until_the_target_holds(lm_path, held_out, tmp_path, capsys):
    """--weights int4 --max-ppl-increase 0.2% on the trained decoder: int4 everywhere misses it on
    the calibration tokens (1.0034x measured), so some layers get 8 bits; the file lies between
    int4-everywhere and 8-bit-everywhere sizes, and the perplexity the report gives is what the
    written model scores on those tokens."""
    import json

    import onnx

    from edgeq.stages.decoder_bits import MAX_FEEDS, mean_nll
    from edgeq.zoo import get

    calib_dir = tmp_path / "calib"
    calib_dir.mkdir()
    calib = get("tiny_lm").calibration_data(16)
    for i, feed in enumerate(calib):
        np.savez(calib_dir / f"{i:02d}.npz", **feed)
    out = tmp_path / "lm.mixed.onnx"
    cli_ok(["quantize", lm_path, "-o", out, "--calib", calib_dir, "--weights", "int4", "--max-ppl-increase", "0.2%",
            "--report", tmp_path / "lm.mixed.report.json"], capsys)
    section = json.loads((tmp_path / "lm.mixed.report.json").read_text())["decoder_bits"]
    first = section["candidates"][0]
    assert first["name"] == "int4 everywhere" and first["ppl_ratio"] > 1.002  # else this test would test nothing
    assert section["met"] and section["ppl_ratio"] <= 1.002 and section["eight_bit"] and not section["fp32"]
    sizes = {c["name"]: c["bytes"] for c in section["candidates"]}
    every8 = next(v for k, v in sizes.items() if k.startswith("8 bits: all"))
    assert sizes["int4 everywhere"] < out.stat().st_size < every8
    proto = onnx.load(out)
    bits = {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in proto.graph.node
            if n.op_type == "MatMulNBits"}
    eight = [n for n, b in bits.items() if b == 8]  # the layers chosen, and the head (8 bits always)
    assert len(eight) == len(section["eight_bit"]) + 1
    assert all(any(m.startswith(n) for m in eight) for n in section["eight_bit"])
    again = mean_nll(out.read_bytes(), calib[:MAX_FEEDS])
    assert np.exp(again - section["fp32_nll"]) == pytest.approx(section["ppl_ratio"], abs=2e-5)
    assert section["decode_ms"]["quantized"] > 0 and section["decode_speedup"] > 0


def test_max_ppl_increase_usage_errors(lm_path, tmp_path, capsys):
    from edgeq.cli.main import main
    from edgeq.zoo import get

    np.savez(tmp_path / "c.npz", **get("tiny_lm").calibration_data(1)[0])
    cases = ((["--max-ppl-increase", "5%"], "with --weights int4"),
             (["--weights", "int4", "--max-ppl-increase", "five"], "not a percentage"))
    for extra, words in cases:
        with pytest.raises(SystemExit) as e:
            main(["quantize", lm_path, "-o", str(tmp_path / "o.onnx"), "--calib", str(tmp_path / "c.npz"), *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as e:  # no token sequences to score
        main(["quantize", lm_path, "-o", str(tmp_path / "o.onnx"), "--weights", "int4", "--max-ppl-increase", "5%"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "needs token sequences" in err
    assert not (tmp_path / "o.onnx").exists()


def test_a_per_layer_answer_slower_than_fp32_says_so(lm_path, monkeypatch):
    """The decode step is timed against fp32's; where the answer is slower (timing replaced here,
    so that the test does not depend on this CPU), the report says so and what to try."""
    import edgeq
    from edgeq.stages import decoder_bits
    from edgeq.zoo import get

    monkeypatch.setattr(decoder_bits, "decode_ms", lambda models, feed: {"fp32": 1.0, "quantized": 2.0})
    config = edgeq.QuantConfig(mode="weight-only", weights="int4", max_ppl_increase=0.05, accuracy_level=0)
    report = edgeq.quantize(lm_path, config, get("tiny_lm").calibration_data(4), progress=False).report
    assert report["decoder_bits"]["decode_speedup"] == 0.5 and report["decoder_bits"]["met"]
    assert any("decode step is 0.50x fp32's speed" in n and "--accuracy-level 4" in n for n in report["notes"])

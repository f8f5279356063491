"""The ``edgeq`` command group.

Commands are loaded lazily from ``edgeq.cli.<module>`` so that ``edgeq --help`` imports neither
torch nor onnx_ir. Every ``EdgeqError`` becomes one line on stderr and exit code 1 (failure) or
2 (usage); click's own usage errors exit with 2 as usual. Any other exception is one line too
(``_library_error``: onnxruntime or onnx refusing the model exits 2, anything else 1); ``--debug``
adds the traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

__all__ = ["main", "cli", "COMMANDS"]

# command name -> (module under edgeq.cli, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "export": ("export", "export", "Export a PyTorch model to ONNX and check it against torch."),
    "export-llm": ("export", "export_llm",
                   "Export a Hugging Face decoder folder (GPT-2, Llama, Qwen2, Phi-3) with its KV cache."),
    "prepare": ("prepare", "prepare", "Make an ONNX graph quantizable (constants, opset, BN, shapes)."),
    "quantize": ("quantize", "quantize", "Quantize an ONNX model (static/dynamic int8, fp16)."),
    "export-and-quantize": (
        "quantize",
        "export_and_quantize",
        "Export a PyTorch model, then quantize it.",
    ),
    "sensitivity": ("sensitivity", "sensitivity", "Per-layer quantization sensitivity."),
    "qat": ("qat", "qat", "Quantization-aware training (zoo model or ONNX file), ending in edgeq's QDQ model."),
    "run": ("run", "run", "Run a model on input feeds and print or save the outputs."),
    "bench": ("bench", "bench", "Benchmark latency, throughput, memory of models."),
    "profile": ("profile", "profile", "Per-operator time of a model on a provider."),
    "compare": ("compare", "compare", "Compare models across providers: speed and fidelity."),
    "inspect": ("inspect", "inspect", "Describe a model: ops, params, int8 share of compute."),
    "generate": ("generate", "generate", "Continue a prompt with a decoder language model (KV cache)."),
    "perplexity": ("generate", "perplexity", "Perplexity of a decoder language model on a text file."),
}


_STATE = {"debug": False}  # set by the group's --debug; read by main's error boundary


def _library_error(e: Exception) -> tuple[str, int]:
    """One line and an exit code for an exception that is not an EdgeqError: onnxruntime or onnx
    refusing the model is the input's fault (2); anything else is a failure of edgeq's (1)."""
    from edgeq.errors import one_line

    text = one_line(e)
    module = type(e).__module__ or ""
    if module.startswith("onnxruntime"):
        return (f"onnxruntime refused the model ({type(e).__name__}: {text}): check it with `edgeq inspect` and "
                "onnx.checker, or re-export it"), 2
    if module.startswith(("onnx.", "onnx_ir")) and type(e).__name__ in ("ValidationError", "InferenceError"):
        return f"the model is not valid ONNX ({type(e).__name__}: {text}): re-export it", 2
    return (f"internal error ({type(e).__name__}: {text}): rerun with --debug for the traceback and "
            "report it"), 1


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(f"edgeq.cli.{module}") is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"edgeq.cli.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeq")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="On an error, print the Python traceback too.")
def cli(verbose: int, debug: bool) -> None:
    """edgeq: smaller, faster ONNX models that give the same answers, with the evidence."""
    _STATE["debug"] = debug
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, turning edgeq errors into one line and an exit code."""
    from edgeq.errors import EdgeqError

    try:
        # Without standalone mode click returns ctx.exit()'s code (0 for --help/--version).
        code = cli.main(args=argv, prog_name="edgeq", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgeq: aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except EdgeqError as e:
        _traceback_if_debug()
        message = " ".join(str(e).split())  # one line, whatever the message held
        click.echo(f"edgeq: error: {message}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("edgeq: interrupted", err=True)
        sys.exit(130)
    except MemoryError:
        _traceback_if_debug()
        click.echo("edgeq: error: out of memory: use fewer calibration samples or a smaller batch", err=True)
        sys.exit(1)
    except Exception as e:  # the one boundary: a library's error is one line too
        _traceback_if_debug()
        message, exit_code = _library_error(e)
        click.echo(f"edgeq: error: {message}", err=True)
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _traceback_if_debug() -> None:
    if _STATE["debug"]:
        import traceback

        traceback.print_exc()


if __name__ == "__main__":
    main()

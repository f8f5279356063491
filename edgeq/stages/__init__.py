"""The quantize pipeline as named stages, each a function of its own module:

    load -> prepare -> plan -> calibrate -> rewrite -> (integer_only) -> check -> report
    (load.py)  (load.py) (plan.py) (calibrate.py) (rewrite.py) (integer_only.py) (check.py) (report.py)

``build_variant`` (variant.py) runs plan to report on one ``Prepared`` model: the unit a search
(auto mode, sensitivity) repeats. The mode handlers run the stages in order: ``quantize_int8``
(int8.py, the static and dynamic modes) and ``quantize_fp16`` (fp16.py); auto mode's handler is
``edgeq.auto.mode``. ``edgeq.quantize`` picks the handler from the mode table
(``edgeq.config.MODES``).

This layer imports passes, calibrate, prepare, reference and report, never auto, the quantizer
or the CLI (``tests/test_layers.py``). Import each stage from its module
(``from edgeq.stages.plan import plan``): the modules are named after their stages.
"""

__all__: list[str] = []

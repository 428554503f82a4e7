"""FLOP counting rule of the DCNv3 core, for counters that trace the model (mmengine's
``FlopAnalyzer`` / ``get_model_complexity_info``, which OpenMMLab's ``get_flops.py`` tools use).

The core (sampling and aggregation) has no weights, so hook-based counters miss it and
jit-trace counters see an op they do not know. Its cost, in multiply-adds as those counters
count (one fused multiply-add = one FLOP), is :func:`dcnv3_flops`:
``5 * N * H_out * W_out * G * P * C'`` for ``P`` sampling points per group of ``C'``
channels: each sampled channel value takes 4 bilinear corner weights and 1 modulation (mask)
weight. This is the rule of the official InternImage counting code (``dcnv3_flops(n, k, c) =
5 * n * k * c`` in OpenGVLab/InternImage ``detection/get_flops.py`` and
``segmentation/get_flops.py``), written per call instead of per block, so it also holds for
other kernel sizes, strides and ``remove_center``. Projections, the depth-wise conv and the
LayerNorm of the DCNv3 module are ordinary layers and counted as such; the mask softmax is not
counted (neither counter counts softmax).

Every backend appears in a jit trace as one node (``m3i_mm::dcnv3_forward`` for
``pytorch``, ``triton`` and ``cuda``; ``m3i_mm_dcnv3_cpu::forward`` for ``cpu``; see
:func:`m3i_mm.ops.dcnv3.function.dcnv3_checked`), so the count does not depend on which backend
runs, on which device, or on the meta device (shapes only).

:func:`register_flop_counters` adds the rule to mmengine's default handles; importing
``m3i_mm.models`` calls it, so ``get_model_complexity_info`` counts DCNv3 in any tool once the
config's ``custom_imports`` has imported m3i_mm.
"""
from typing import Any, List

__all__ = ['DCNV3_TRACED_OPS', 'MACS_PER_SAMPLED_VALUE', 'dcnv3_flops', 'dcnv3_flop_jit',
           'dcnv3_activation_jit', 'register_flop_counters']

#: Names of the DCNv3 core in a jit trace, by backend.
DCNV3_TRACED_OPS = ('m3i_mm::dcnv3_forward', 'm3i_mm_dcnv3_cpu::forward')
#: Multiply-adds per sampled channel value: 4 bilinear corner weights + 1 mask weight.
MACS_PER_SAMPLED_VALUE = 5
# position of ``group`` in the ops' schemas: input, offset, mask, kernel_h, kernel_w,
# stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, ...
_GROUP_ARG = 11


def dcnv3_flops(batch: int, out_h: int, out_w: int, group: int, points: int,
                group_channels: int) -> int:
    """Multiply-adds of one DCNv3 core call.

    Args:
        batch, out_h, out_w: Output size ``(N, H_out, W_out)``.
        group: Number of groups ``G``.
        points: Sampling points per group ``P`` (``kernel_h * kernel_w``, minus 1 with
            ``remove_center``).
        group_channels: Channels per group ``C'``.
    """
    return MACS_PER_SAMPLED_VALUE * batch * out_h * out_w * group * points * group_channels


def _sizes(value: Any) -> List[int]:
    sizes = value.type().sizes()
    if sizes is None:
        raise ValueError('DCNv3 FLOP count: the traced graph has no static shape for a '
                         'DCNv3 tensor')
    return list(sizes)


def dcnv3_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """mmengine/fvcore jit handle of the DCNv3 core ops (:data:`DCNV3_TRACED_OPS`).

    Args:
        inputs: The node's input values (``input, offset, mask, kernel_h, ..., group, ...``).
        outputs: Its output values (``(N, H_out, W_out, G * C')``).
    """
    batch, out_h, out_w, channels = _sizes(outputs[0])
    group = int(inputs[_GROUP_ARG].toIValue())
    points = _sizes(inputs[2])[-1] // group  # mask: (N, H_out, W_out, G * P)
    return dcnv3_flops(batch, out_h, out_w, group, points, channels // group)


def dcnv3_activation_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Activation count of the core (its output elements), as mmengine counts layers."""
    count = 1
    for size in _sizes(outputs[0]):
        count *= size
    return count


def register_flop_counters() -> bool:
    """Add the DCNv3 rules to mmengine's default FLOP and activation handles.

    mmengine has no public registry of handles: ``FlopAnalyzer`` reads these module-level
    dicts (mmengine 0.7 to 0.10) when it is created. Where they are missing, nothing is
    registered, and ``FlopAnalyzer(...).set_op_handle(name, dcnv3_flop_jit)`` for each of
    :data:`DCNV3_TRACED_OPS` does the same by hand.

    Returns:
        Whether the rules were registered (mmengine installed, the op itself needs only
        torch).
    """
    try:
        from mmengine.analysis import complexity_analysis
    except ImportError:
        return False
    flop_handles = getattr(complexity_analysis, '_DEFAULT_SUPPORTED_FLOP_OPS', None)
    activation_handles = getattr(complexity_analysis, '_DEFAULT_SUPPORTED_ACT_OPS', None)
    if not isinstance(flop_handles, dict) or not isinstance(activation_handles, dict):
        return False
    for name in DCNV3_TRACED_OPS:
        flop_handles[name] = dcnv3_flop_jit
        activation_handles[name] = dcnv3_activation_jit
    return True

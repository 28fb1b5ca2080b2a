"""What each TensorRT release's ONNX parser and DLA accept, as data (abridged from onnx-tensorrt's
operator support lists; entries marked in comments where they are from memory rather than a source).
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Tuple

# ai.onnx ops the TensorRT 8.2 parser imports (JetPack 4.6).
_TRT82 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual HardSigmoid Identity If
InstanceNormalization IsInf IsNaN LRN LSTM LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization
LpPool MatMul Max MaxPool Mean Min Mod Mul Neg NonMaxSuppression Not OneHot Or PRelu Pad Pow
QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1
ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
Relu Reshape Resize Round Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh
Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
TopK Transpose Unsqueeze Upsample Where Xor
""".split())
# 8.4-8.6 (JetPack 5.x) add these (HardSwish/NonZero in 8.5; LayerNormalization, GridSample, Trilu,
# ReverseSequence in 8.6 - from memory of the release notes).
_TRT85 = _TRT82 | frozenset("HardSwish NonZero Hardmax LayerNormalization GridSample Trilu ReverseSequence"
                            " Mish BitShift".split())
# 10.x (JetPack 6) adds these.
_TRT10 = _TRT85 | frozenset("GroupNormalization Gelu DFT STFT BlackmanWindow HammingWindow HannWindow"
                            " Col2Im RoiAlign Bernoulli ScaledDotProductAttention".split())

# (minimum TensorRT version, supported op set); the newest entry not above the target version applies.
OP_TABLE: Tuple[Tuple[Tuple[int, int], FrozenSet[str]], ...] = (
    ((8, 0), _TRT82), ((8, 4), _TRT85), ((10, 0), _TRT10),
)

# Q/DQ zero-point element types each parser accepts (INT8 everywhere; FP8/INT4 from 10.x, not UINT8).
QDQ_TYPES: Tuple[Tuple[Tuple[int, int], FrozenSet[int]], ...] = (
    ((8, 0), frozenset({3})),  # INT8
    ((10, 0), frozenset({3, 17, 22})),  # + FLOAT8E4M3FN, INT4
)


def _pick(table, version: Tuple[int, ...]):
    chosen = table[0][1]
    for since, value in table:
        if tuple(version[:2]) >= since:
            chosen = value
    return chosen


def supported_ops(trt_version: Tuple[int, ...]) -> FrozenSet[str]:
    return _pick(OP_TABLE, trt_version)


def qdq_types(trt_version: Tuple[int, ...]) -> FrozenSet[int]:
    return _pick(QDQ_TYPES, trt_version)


def first_version_with(op: str) -> str:
    for since, ops in OP_TABLE:
        if op in ops:
            return ".".join(str(v) for v in since)
    return ""


# ------------------------------------------------------------------------------------- DLA
# Layers DLA (Xavier / Orin, TensorRT 8.5-10.x) runs; everything else falls back to the GPU.
DLA_OPS = frozenset("Conv ConvTranspose MaxPool AveragePool GlobalAveragePool GlobalMaxPool Relu Sigmoid Tanh"
                    " Clip LeakyRelu PRelu Add Sub Mul Max Min BatchNormalization Concat Resize Upsample"
                    " Softmax Abs Identity QuantizeLinear DequantizeLinear Reshape Transpose Flatten".split())
DLA_LIMITS: Dict[str, Tuple[int, int]] = {
    "kernel": (1, 32), "stride": (1, 8), "pad": (0, 31), "dilation": (1, 32), "pool_window": (1, 8),
    "resize_scale": (1, 32), "channels": (1, 8192),
}

"""The cost model's names and constants, apart from the solver so that the console script can
build its options (objectives, targets) without importing the engine."""

OBJECTIVES = ("flops", "params", "latency")
SITE_KINDS = frozenset({"bias fold", "border fold", "reinsert"})
# Latency objective, in FLOPs of conv work: ONNX Runtime's CPU convs run at 60-110 GFLOP/s on
# one core, while a reinsertion (Pad, Gather, Add) takes 0.2-0.3 ns per element of the full
# tensor and breaks the blocked layout around it; an element moved costs MOVED_ELEMENT, an
# added op NODE_OVERHEAD.
NODE_OVERHEAD = 2e5
MOVED_ELEMENT = 20.0

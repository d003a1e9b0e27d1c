"""Channel layouts of tensors and the per-channel value facts attached to them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A constant beyond 2^28 in magnitude is treated like an Inf (what it produces may be
# non-finite), and a channel's value that large is not folded anywhere (the fold itself could
# overflow). Not 2^100 (what overflows float32 once times an input of 2^28): what such a
# constant makes meets the input again further on (1e30 * x*x * x is Inf for |x| = 1e4, and 0 *
# Inf is NaN behind a zero weight), and trained weights stay far below 2^28 anyway.
# A float32 scalar, not a Python float: compared with a float16 array, a Python float is cast
# to float16, where 2^28 is Inf (and an Inf weight then passes as bounded).
HUGE = np.float32(2.0 ** 28)


@dataclass
class ChannelInfo:
    """The channels of one tensor: which axis holds them and which positions each one occupies.

    Channel `k` occupies positions `positions[k]` along `axis` (one position for a conv
    feature map, a block of H*W positions after Flatten). Every channel is also a node of the
    coupling graph: node id `base + k`. `known[k]` says the whole channel is the constant
    `const[k]` (a zero channel is known with const 0); otherwise nothing is known about it.
    `finite[k]` False: the channel may carry NaN or Inf (a non-finite or huge constant produced
    it, or its known value computes to one); a zero weight does not ignore it (0 * NaN is NaN),
    and it is never known.
    """

    axis: int
    positions: np.ndarray  # (n, block) int64
    base: int
    known: np.ndarray = field(default=None)  # type: ignore[assignment]  # (n,) bool
    const: np.ndarray = field(default=None)  # type: ignore[assignment]  # (n,) float32
    # Between the Reshapes of a channel shuffle the channels lie on `span` consecutive axes
    # from `axis`; positions are then row-major flat indices over those axes.
    span: int = 1
    # None: a known channel k is the constant const[k] everywhere. Else a map over the axes
    # after the channel axis, the same for every channel: known channel k is const[k] * plane
    # (a constant averaged with zero padding; see Rule.planes for who may read it).
    plane: np.ndarray | None = None
    finite: np.ndarray = field(default=None)  # type: ignore[assignment]  # (n,) bool
    # None, or what is known of each slice along one other axis (the q, k, v of a fused qkv's
    # heads): (that axis, known (L, n), const (L, n)). Only rules that move that axis or pick
    # slices of it carry it on; dropping it only forgets facts.
    parts: tuple[int, np.ndarray, np.ndarray] | None = None
    # A sound interval holding every value of channel k, in float64 (infinite: unbounded);
    # set by channelcut.ops.bounds after the node's rule (see channelcut.ranges).
    lo: np.ndarray = field(default=None)  # type: ignore[assignment]  # (n,) float64
    hi: np.ndarray = field(default=None)  # type: ignore[assignment]  # (n,) float64

    def __post_init__(self) -> None:
        if self.known is None:
            self.known = np.zeros(self.n, dtype=bool)
        if self.const is None:
            self.const = np.zeros(self.n, dtype=np.float32)
        if self.finite is None:
            self.finite = np.ones(self.n, dtype=bool)
        if self.lo is None:
            self.lo = np.full(self.n, -np.inf)
        if self.hi is None:
            self.hi = np.full(self.n, np.inf)

    @property
    def n(self) -> int:
        return int(self.positions.shape[0])

    @property
    def block(self) -> int:
        return int(self.positions.shape[1])

    @property
    def size(self) -> int:
        """Length of the channel axis: every position belongs to exactly one channel."""
        return self.n * self.block

    @property
    def ids(self) -> np.ndarray:
        return np.arange(self.base, self.base + self.n)

    @property
    def zero(self) -> np.ndarray:
        return self.known & (self.const == 0)

    def set_values(self, known: np.ndarray, const: np.ndarray) -> None:
        """Record what is known: `const` is only meaningful where `known` is set.

        A known value that is NaN or Inf in float32 (the runtime's type: a fold that overflows)
        is not a constant anyone may fold or drop: that channel is unknown and not finite. A
        finite value beyond HUGE is unknown too (folding it could overflow).
        """
        known = np.asarray(known, dtype=bool)
        with np.errstate(all="ignore"):
            const = np.asarray(const).astype(np.float32)
        nonfinite = known & ~np.isfinite(const)
        self.finite = self.finite & ~nonfinite
        self.known = known & ~nonfinite & ~(np.abs(const) > HUGE)
        self.const = np.where(self.known, const, 0).astype(np.float32)

    def mark_nonfinite(self, channels: np.ndarray | None = None) -> None:
        """These channels (a mask; None: all) may carry NaN or Inf: not known, not finite."""
        channels = np.ones(self.n, dtype=bool) if channels is None else channels
        self.finite = self.finite & ~channels
        self.known = self.known & ~channels
        self.const = np.where(self.known, self.const, 0).astype(np.float32)

    @property
    def uniform(self) -> np.ndarray:
        """Channels known to be one constant everywhere (zero channels always are)."""
        return self.known & ((self.const == 0) | (self.plane is None))

    def without_plane(self) -> ChannelInfo:
        """The same channels, knowing only what holds without the plane: the zero channels."""
        return ChannelInfo(self.axis, self.positions, self.base, self.zero.copy(),
                           np.zeros(self.n, np.float32), self.span, finite=self.finite)

    def channel_at_position(self) -> np.ndarray:
        """For every position along the axis, the channel that owns it."""
        owner = np.empty(self.size, dtype=np.int64)
        owner[self.positions.ravel()] = np.repeat(np.arange(self.n), self.block)
        return owner

    def by_position(self, per_channel: np.ndarray) -> np.ndarray:
        """Spread a per-channel array over positions along the axis."""
        return per_channel[self.channel_at_position()]


def identity_positions(n: int, block: int = 1) -> np.ndarray:
    """Channel k owns the contiguous block [k*block, (k+1)*block)."""
    return np.arange(n * block, dtype=np.int64).reshape(n, block)


def per_channel_constant(
    array: np.ndarray, axis: int, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which channels of a constant (along `axis`, laid out by `positions`) are one value.

    Returns (known, const): channel k is known when every element of the constant at its
    positions, over all other axes, is the same number.
    """
    moved = np.moveaxis(np.asarray(array, dtype=np.float32), axis, 0)
    if moved.shape[0] == 1:  # broadcast along the channel axis: one value for all
        flat = moved.reshape(-1)
        uniform = flat.size > 0 and bool(np.all(flat == flat[0]))
        n = positions.shape[0]
        return np.full(n, uniform), np.full(n, flat[0] if uniform else 0, dtype=np.float32)
    per_pos = moved.reshape(moved.shape[0], -1)[positions.ravel()]
    per_channel = per_pos.reshape(positions.shape[0], -1)
    first = per_channel[:, :1]
    known = np.all(per_channel == first, axis=1)
    return known, np.where(known, first[:, 0], 0).astype(np.float32)


# Up to this many elements on the last axis, OR-ing slices beats numpy's reduction; past it the
# strided slices waste most of each cache line they load.
SHORT_AXIS = 16


def nonzero_along_last_axis(array: np.ndarray) -> np.ndarray:
    """`(array != 0).any(axis=-1)`, exactly (denormals are non-zero, -0.0 is zero), faster
    for floats on a short last axis (a kernel's k weights): the bits of each slice are OR-ed
    together one slice at a time, then the sign bit is ignored. numpy reduces short axes
    slowly.
    """
    if array.dtype == np.float16 and not 1 < array.shape[-1] <= SHORT_AXIS:
        # numpy compares float16 element by element, converting each (10x slower than
        # float32): test the bits without the sign bit instead (a view, of any strides)
        return ((array.view(np.uint16) << 1) != 0).any(axis=-1)
    if array.shape[-1] == 1:
        return array[..., 0] != 0
    if array.dtype.kind != "f" or array.shape[-1] > SHORT_AXIS:
        return (array != 0).any(axis=-1)
    bits = array.view(f"u{array.dtype.itemsize}")
    acc = bits[..., 0].copy()
    for k in range(1, bits.shape[-1]):
        acc |= bits[..., k]
    magnitude = np.array(np.iinfo(acc.dtype).max >> 1, acc.dtype)  # every bit but the sign
    return (acc & magnitude) != 0


def uniform_constant(array: np.ndarray | None) -> float | None:
    """The single value of a constant whose elements are all equal, else None."""
    if array is None or array.size == 0:
        return None
    flat = np.asarray(array).reshape(-1)
    return float(flat[0]) if bool(np.all(flat == flat[0])) else None

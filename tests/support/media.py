"""Sound read back from files by PyAV directly (not through the pack's codec), and how well
two sounds line up: for tests that check the pack kept a clip's sound in sync."""
from __future__ import annotations

import av
import numpy as np


def decode_mono(path) -> tuple[np.ndarray, int]:
    """A file's whole first sound track as mono float32 (FFmpeg's downmix), and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=stream.rate)
        parts = [p.to_ndarray()[0] for f in container.decode(stream) for p in resampler.resample(f)]
        return np.concatenate(parts), stream.rate


def correlation_at_best_lag(reference: np.ndarray, signal: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The shift of ``signal`` (in samples, within +-max_lag) that best matches ``reference``,
    and their correlation coefficient at that shift (1 = the same sound)."""
    n = min(len(reference), len(signal) - max_lag) - 2 * max_lag
    core = reference[max_lag:max_lag + n]
    scores = [np.dot(core, signal[max_lag + lag:max_lag + lag + n]) for lag in range(-max_lag, max_lag + 1)]
    lag = int(np.argmax(scores)) - max_lag
    return lag, float(np.corrcoef(core, signal[max_lag + lag:max_lag + lag + n])[0, 1])

"""Timers: CUDA events (L2-cold, queued behind a GPU sleep), CUDA-graph replay, host wall time,
and the copy ceiling; CpuTimer is the time.perf_counter counterpart used on the CPU."""
from __future__ import annotations

import statistics
import time

import torch


class CudaTimer:
    def __init__(self, device, l2_mode="rotate"):
        self.device = device
        self.l2_mode = l2_mode
        self.flush_buf = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=device) if l2_mode == "flush" else None
        self.has_sleep = hasattr(torch.cuda, "_sleep")
        self.cycles_per_us = self._calibrate() if self.has_sleep else 0.0

    def _calibrate(self):
        try:
            torch.cuda._sleep(1000)
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.cuda._sleep(20_000_000)
            e.record()
            e.synchronize()
            return 20_000_000 / (s.elapsed_time(e) * 1e3)
        except Exception:
            self.has_sleep = False
            return 0.0

    def sleep_us(self, us):
        if self.has_sleep and us > 0:
            torch.cuda._sleep(int(us * self.cycles_per_us))

    def events(self, fn, reps, budget_s, min_reps=10):
        """Median GPU time (us) of fn(i), i = 0..reps-1, each bracketed by CUDA events; the calls
        are queued behind a GPU sleep long enough that Python never starves the GPU."""
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(3):
            fn(i)
        torch.cuda.synchronize()
        per_call = (time.perf_counter() - t0) / 3
        reps = max(min_reps, min(reps, int(budget_s / max(per_call, 1e-7))))
        # host enqueue cost per call, measured while the GPU is busy
        self.sleep_us(30_000)
        t0 = time.perf_counter()
        for i in range(3):
            fn(i)
        host = (time.perf_counter() - t0) / 3
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        self.sleep_us(min(2.0 * reps * host * 1e6 + 500, 2e6))
        for i in range(reps):
            if self.flush_buf is not None:
                self.flush_buf.zero_()
            starts[i].record()
            fn(i)
            ends[i].record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)), reps

    def graph(self, fn, ncalls, reps):
        """GPU time (us) per call: ncalls calls fn(0..ncalls-1) captured in one CUDA graph,
        median over reps replays, divided by ncalls."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                fn(i)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(ncalls):
                fn(i)
        g.replay()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            starts[i].record()
            g.replay()
            ends[i].record()
        torch.cuda.synchronize()
        t = statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)) / ncalls
        del g
        return t, reps

    @staticmethod
    def host(fn, n=200, repeats=7):
        """Host wall time (us) per eager call: n back-to-back calls, one synchronize, / n."""
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            torch.cuda.synchronize()
            ts.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(ts), n * repeats

    def copy_ceiling(self, gib=2.0, reps=20):
        n = int(gib * 2 ** 30) // 4
        src = torch.ones(n, dtype=torch.float32, device=self.device)
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        t, _ = self.events(lambda i: dst.copy_(src), reps, budget_s=10.0, min_reps=reps)
        del src, dst
        torch.cuda.empty_cache()
        return 2 * n * 4 / (t * 1e-6) / 1e9, t


class CpuTimer:
    @staticmethod
    def events(fn, reps, budget_s, min_reps=3):
        for i in range(2):
            fn(i)
        ts = []
        deadline = time.perf_counter() + budget_s
        for i in range(reps):
            t0 = time.perf_counter()
            fn(i)
            ts.append((time.perf_counter() - t0) * 1e6)
            if len(ts) >= min_reps and time.perf_counter() > deadline:
                break
        return statistics.median(ts), len(ts)

    @staticmethod
    def copy_ceiling(gib=0.25, reps=10):
        n = int(gib * 2 ** 30) // 4
        src = torch.ones(n, dtype=torch.float32)
        dst = torch.empty_like(src)
        t, _ = CpuTimer.events(lambda i: dst.copy_(src), reps, budget_s=5.0, min_reps=reps)
        return 2 * n * 4 / (t * 1e-6) / 1e9, t

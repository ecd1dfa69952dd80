"""Memory of a forward, measured and predicted: one room for both.

- `measured`: the allocator's peaks and NVML's used memory on a GPU, the process's RSS on the CPU.
- `predict`: predicted peak GPU memory without a GPU, for a named GPU profile (`profiles`): the
  forward traced on fake CUDA tensors (`trace`, with the CUDA build's dispatch choices in `rules`
  and each custom op's declared memory model) replayed through a model of the caching allocator
  (`allocator`).
- `analytic`: the closed-form peak of a family (its spec's memory terms).
- `check`: the CPU validation against torch.profiler (`python -m bench.memory.check`).
"""

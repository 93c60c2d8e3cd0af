import faulthandler, sys, torch, torch_ops
faulthandler.enable()
ops = torch.ops.gatednorm
for dev in sys.argv[1:]:
    x = torch.randn(4, 64, device=dev)
    for name, args in [("divisor", (x, None, None, None, 1e-6, 7, True, False, "silu")),
                       ("act", (x, None, None, None, 1e-6, None, True, False, "gelu")),
                       ("ok", (x, None, None, None, 1e-6, None, True, False, "silu"))]:
        print(dev, name, flush=True)
        try:
            r = ops.gated_norm_fwd(*args)
            print("  ok", r[0].shape, flush=True)
        except Exception as e:
            print("  raised", type(e).__name__, str(e)[:100], flush=True)

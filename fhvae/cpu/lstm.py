"""The fast CPU LSTM: the model's stacked ``nn.LSTM`` layers, same parameters, outputs and gradients,
computed in a layout and with a backward pass that suit CPUs with few cores.

* Layout (features, time, batch): the per-step matrix products have the shape CPU BLAS runs fastest.
* An input that is constant over time (the decoder's [z1, z2], the z2 part of the z1 encoder's input)
  is projected once per sequence instead of T times.
* A hand-written backward pass forms each layer's weight gradients with one large matrix product
  instead of T small ones.
* A layer's whole time loop, forward and backward, runs in C (``lstm_kernels.c`` via
  ``fhvae.cpu.kernels``: per step one sgemm and one fused element-wise pass, the batch split over the
  threads); PyTorch ops (element-wise math on one thread, see ``_one_thread``) where no C compiler or
  BLAS sgemm is available.

Tuned for machines with few cores; the plain ``nn.LSTM`` (oneDNN) may be faster on other CPUs
(``model.plain``; BENCHMARKS.md, section 3). Entry points: ``last_states`` and ``const_input``
(called through ``fhvae.models.lstm``, the model's one LSTM seam).
"""
import contextlib

import torch

from fhvae.cpu import kernels as cpu_kernels

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # grad * y * (1 - y), y = sigmoid(a)
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # grad * (1 - y^2), y = tanh(a)


def last_states(lstm, x, const=None):
    """Last hidden states of every layer (B, L*H), layer 0 first, of ``lstm`` (nn.LSTM, batch_first)
    run over x (B, T, F) with const (B, C) (or None) appended to every step's input."""
    xt, F = _feature_major(x), x.shape[2]
    if const is None:
        gx = _in_proj(lstm.weight_ih_l0, _bias(lstm, 0), xt)
    else:   # x part for every step; const part (with the biases) once per sequence, broadcast over T
        w = lstm.weight_ih_l0
        gx = _in_proj(w[:, :F], None, xt).add_(torch.addmm(_bias(lstm, 0)[:, None], w[:, F:], const.t())[:, None])
    return _last_states(_lstm_fast(lstm, gx, x.shape[1]))


def const_input(lstm, z, steps, heads):
    """``lstm`` fed z (B, I) at each of ``steps`` steps. Returns [head(h) (B, T, O) for head in heads]
    (affine heads on the last layer's outputs h) and h itself as (B, H, T)."""
    gx = torch.addmm(_bias(lstm, 0)[:, None], lstm.weight_ih_l0, z.t())  # (4H, B): same every step
    h = _lstm_fast(lstm, gx, steps)[-1]  # (H, T, B)
    H, B = h.shape[0], h.shape[2]
    hf = h.reshape(H, steps * B)
    outs = [_in_proj(head.weight, head.bias, hf).view(-1, steps, B).permute(2, 1, 0).contiguous() for head in heads]
    return outs, h.permute(2, 0, 1)


# Layout (features, time, batch): a layer's inputs are X (F_in, T, B), its gate
# pre-activations gx = W_ih X + b (4H, T, B) and its outputs h (H, T, B). Gate order i, f, g, o
# and parameters exactly as nn.LSTM; initial states are zero.

# and parameters exactly as nn.LSTM; initial states are zero.

def _feature_major(x):
    """(B, T, F) -> contiguous (F, T, B)."""
    return x.permute(2, 1, 0).contiguous()


def _bias(lstm, layer):
    """b_ih + b_hh of one nn.LSTM layer, (4H,)."""
    return getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")


def _in_proj(w, b, x):
    """w (O, I) @ x (I, ...) + b (O,) -> (O, ...): one matrix product over all time steps and sequences."""
    y = w @ x.reshape(x.shape[0], -1)
    if b is not None:
        y.add_(b[:, None])  # much faster here than addmm's broadcast copy of b
    return y.view(w.shape[0], *x.shape[1:])


def _lstm_fast(lstm, gx, steps):
    """Stacked LSTM given layer 0's gate pre-activations gx, (4H, T, B) or (4H, B) if constant over
    time. Returns the outputs of every layer, each (H, T, B)."""
    outs = []
    for layer in range(lstm.num_layers):
        if layer > 0:
            gx = _in_proj(getattr(lstm, f"weight_ih_l{layer}"), _bias(lstm, layer), outs[-1])
        w_hh = getattr(lstm, f"weight_hh_l{layer}")
        if torch.is_grad_enabled() and (gx.requires_grad or w_hh.requires_grad):
            outs.append(LSTMLayer.apply(gx, w_hh, steps))
        else:
            outs.append(layer_forward(gx, w_hh, steps, save=False)[0])
    return outs


def _last_states(outs):
    """Per-layer outputs [(H, T, B)] -> last hidden states of all layers (B, L*H), layer 0 first."""
    return torch.cat([h[:, -1] for h in outs], dim=0).t()


@contextlib.contextmanager
def _one_thread():
    """Run the enclosed ops with one intra-op thread (torch.set_num_threads of the calling thread,
    restored on exit). A time step's element-wise LSTM math is too small to share: each multi-threaded
    op pays a thread barrier, and when other processes compete for the cores those barriers cost
    several times the whole computation. Matrix products keep all threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fused(t):
    """The compiled step kernels if they apply to buffers of t's dtype (float32), else None."""
    return cpu_kernels.kernels() if t.dtype == torch.float32 else None


def layer_forward(gx, w_hh, steps, save):
    """One LSTM layer from gate pre-activations gx ((4H, T, B) or constant (4H, B)) and w_hh (4H, H).

    Returns h (H, T, B) and, if save, what the backward pass needs: the gate activations (T, 4H, B),
    the cell states c (T + 1, H, B) with c[0] = 0, and tanh(c[1:]) (T, H, B). Without save, the
    buffers hold one step only.
    """
    hid, batch = w_hh.shape[1], gx.shape[-1]
    n = steps if save else 1
    acts = gx.new_empty(n, 4 * hid, batch)
    c = gx.new_empty(n + 1, hid, batch)
    c[0].zero_()  # c_{-1} = 0; every other slot is written before it is read
    tanh_c = gx.new_empty(n, hid, batch)
    h = gx.new_empty(hid, steps, batch)
    lib = _fused(gx)
    if lib is not None:  # the whole time loop in C (lstm_kernels.c)
        gx = gx if gx.stride(-1) == 1 else gx.contiguous()
        w_hh = w_hh.detach().contiguous()
        lib.lstm_layer_forward(gx.data_ptr(), gx.stride(0), 0 if gx.dim() == 2 else gx.stride(1), w_hh.data_ptr(),
                               h.data_ptr(), acts.data_ptr(), c.data_ptr(), tanh_c.data_ptr(), int(save), steps,
                               hid, batch, cpu_kernels.chunks())
        return h, (acts, c, tanh_c)
    for t in range(steps):
        k, prev, new = (t, t, t + 1) if save else (0, t % 2, (t + 1) % 2)
        a = acts[k]
        gx_t = gx if gx.dim() == 2 else gx[:, t]
        if t == 0:  # h_{-1} = 0
            a.copy_(gx_t)
        else:
            torch.addmm(gx_t, w_hh, h[:, t - 1], out=a)
        with _one_thread():
            i, f, g, o = a.chunk(4)
            # tanh(x) = 2 sigmoid(2x) - 1: cheaper here than torch.tanh, and one sigmoid covers all gates
            g.mul_(2)
            a.sigmoid_()
            g.mul_(2).sub_(1)
            torch.mul(f, c[prev], out=c[new]).addcmul_(i, g)
            torch.mul(c[new], 2, out=tanh_c[k]).sigmoid_().mul_(2).sub_(1)
            torch.mul(o, tanh_c[k], out=h[:, t])
    return h, (acts, c, tanh_c)


def layer_backward(w_hh, acts, c, tanh_c, dh_out):
    """d loss / d gate pre-activations (4H, T, B) of one layer, from its saved forward buffers
    (see layer_forward) and dh_out (H, T, B) = d loss / d h."""
    steps, four_hid, batch = acts.shape
    hid = four_hid // 4
    d_pre = acts.new_empty(four_hid, steps, batch)
    dh = acts.new_empty(hid, batch)
    dc = acts.new_empty(hid, batch)  # d loss / d c_t, carried back through the forget gate; zeroed below or in C
    lib = _fused(acts)
    if lib is not None:  # the whole time loop in C (lstm_kernels.c)
        dh_out = dh_out if dh_out.stride(-1) == 1 else dh_out.contiguous()
        w_hh = w_hh.contiguous()
        lib.lstm_layer_backward(w_hh.data_ptr(), acts.data_ptr(), c.data_ptr(), tanh_c.data_ptr(), dh_out.data_ptr(),
                                dh_out.stride(0), dh_out.stride(1), d_pre.data_ptr(), dh.data_ptr(), dc.data_ptr(),
                                steps, hid, batch, cpu_kernels.chunks())
        return d_pre
    w_hh_t, tmp = w_hh.t().contiguous(), acts.new_empty(hid, batch)
    dc.zero_()
    for t in reversed(range(steps)):
        if t == steps - 1:
            dh.copy_(dh_out[:, t])
        else:
            torch.addmm(dh_out[:, t], w_hh_t, d_pre[:, t + 1], out=dh)
        with _one_thread():
            a, d = acts[t], d_pre[:, t]
            i, f, g, o = a.chunk(4)
            di, df, dg, do = d.chunk(4)
            # h_t = o * tanh(c_t);  c_t = f * c_{t-1} + i * g
            dc.add_(_tanh_backward(torch.mul(dh, o, out=tmp), tanh_c[t], grad_input=tmp))
            torch.mul(dh, tanh_c[t], out=do)
            torch.mul(dc, g, out=di)
            torch.mul(dc, c[t], out=df)
            torch.mul(dc, i, out=dg)
            _sigmoid_backward(d[:2 * hid], a[:2 * hid], grad_input=d[:2 * hid])
            _tanh_backward(dg, g, grad_input=dg)
            _sigmoid_backward(do, o, grad_input=do)
            dc.mul_(f)
    return d_pre


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer with a hand-written backward: gx (4H, T, B) or (4H, B), w_hh (4H, H) -> h (H, T, B)."""

    @staticmethod
    def forward(ctx, gx, w_hh, steps):
        h, (acts, c, tanh_c) = layer_forward(gx, w_hh, steps, save=True)
        ctx.const_input = gx.dim() == 2
        ctx.save_for_backward(w_hh, h, acts, c, tanh_c)
        return h

    @staticmethod
    def backward(ctx, dh_out):
        w_hh, h, acts, c, tanh_c = ctx.saved_tensors
        d_pre = layer_backward(w_hh, acts, c, tanh_c, dh_out)
        four_hid, hid = w_hh.shape
        # sum_t d_pre_t h_{t-1}^T over t >= 1 (h_{-1} = 0) as one matrix product
        dw_hh = d_pre[:, 1:].reshape(four_hid, -1) @ h[:, :-1].reshape(hid, -1).t()
        dgx = d_pre.sum(1) if ctx.const_input else d_pre
        return dgx, dw_hh, None

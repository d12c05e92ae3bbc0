"""Independent NumPy forwards of the published originals (written from their code, float64, loops/einsum)."""

from __future__ import annotations

import math

import numpy as np

_ERF = np.vectorize(math.erf)


def gelu(x):
    """Exact GELU, ``0.5 x (1 + erf(x / √2))`` (torch's ``nn.GELU()`` / ``F.gelu`` default)."""
    return 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)))


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def batch_norm_eval(x, w, b, mean, var, eps=1e-5, axis=1):
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda v: np.asarray(v).reshape(shape)  # noqa: E731
    return (x - r(mean)) / np.sqrt(r(var) + eps) * r(w) + r(b)


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def conv1d(x, w, b, dilation=1, padding=0):
    """``(B, C, T)`` ⊛ ``w (O, C, K)``: an explicit loop over the kernel taps (zero padding)."""
    bsz, _, t = x.shape
    o, _, k = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    t_out = t + 2 * padding - dilation * (k - 1)
    out = np.zeros((bsz, o, t_out))
    for j in range(k):
        out += np.einsum("oc,bct->bot", w[:, :, j], xp[:, :, j * dilation: j * dilation + t_out])
    return out + b[None, :, None]


# -- the DALLE2-pytorch diffusion prior of MindEye1/2 (PriorNetwork, FlaggedCausalTransformer, samplers) --
SCHEDULE_NAMES = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                  "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                  "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                  "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                  "p2_loss_weight")


def cosine_schedule(timesteps, s=0.008):
    """dalle2 ``cosine_beta_schedule`` + ``NoiseScheduler``'s 13 buffers, float64 (name → array)."""
    x = np.arange(timesteps + 1, dtype=np.float64)
    f = np.cos((x / timesteps + s) / (1 + s) * np.pi / 2) ** 2
    f = f / f[0]
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    acp = np.cumprod(1 - betas)
    prev = np.concatenate([[1.0], acp[:-1]])
    post = betas * (1 - prev) / (1 - acp)
    return dict(zip(SCHEDULE_NAMES, (
        betas, acp, prev, np.sqrt(acp), np.sqrt(1 - acp), np.log(1 - acp), np.sqrt(1 / acp),
        np.sqrt(1 / acp - 1), post, np.log(np.maximum(post, 1e-20)), betas * np.sqrt(prev) / (1 - acp),
        (1 - prev) * np.sqrt(1 - betas) / (1 - acp), np.ones(timesteps))))


def dalle2_layer_norm(x, g, stable=False, eps=1e-5):
    """dalle2 ``LayerNorm``: gain only; ``stable`` divides by the signed maximum over the features first."""
    if stable:
        x = x / x.max(-1, keepdims=True)
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g


def rel_pos_bucket(d, num_buckets=32, max_distance=128):
    """T5 bucket of a non-negative distance ``d`` (exact below ``num_buckets // 2``, then logarithmic)."""
    exact = num_buckets // 2
    if d < exact:
        return d
    return min(exact + int(math.log(d / exact) / math.log(max_distance / exact) * (num_buckets - exact)),
               num_buckets - 1)


def rotary(x, freqs):
    """Rotate the feature pairs ``(2j, 2j + 1)`` of the first ``2 · len(freqs)`` features of ``x[..., p, :]``
    by the angle ``p · freqs[j]``; the other features unchanged."""
    out = x.copy()
    for p in range(x.shape[-2]):
        for j, f in enumerate(freqs):
            c, s = math.cos(p * f), math.sin(p * f)
            a, b = x[..., p, 2 * j], x[..., p, 2 * j + 1]
            out[..., p, 2 * j], out[..., p, 2 * j + 1] = a * c - b * s, b * c + a * s
    return out


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _prior_attention(x, sd, p, bias, freqs, heads, eps):
    """dalle2 ``Attention`` (cosine sim, scale 16, one shared K/V head, null K/V), non-causal."""
    bsz, n, _ = x.shape
    x = dalle2_layer_norm(x, sd[p + "norm.g"], eps=eps)
    q = (x @ sd[p + "to_q.weight"].T).reshape(bsz, n, heads, -1).transpose(0, 2, 1, 3) * 16
    kv = x @ sd[p + "to_kv.weight"].T
    dh = kv.shape[-1] // 2
    k, v = kv[..., :dh], kv[..., dh:]
    q, k = rotary(q, freqs), rotary(k, freqs)
    null = sd[p + "null_kv"]
    k = np.concatenate([np.broadcast_to(null[0], (bsz, 1, dh)), k], axis=1)
    v = np.concatenate([np.broadcast_to(null[1], (bsz, 1, dh)), v], axis=1)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True) * 4
    k = k / np.linalg.norm(k, axis=-1, keepdims=True) * 4
    out = np.zeros((bsz, n, heads, dh))
    for h in range(heads):
        sim = np.einsum("bid,bjd->bij", q[:, h], k) + bias[h]
        out[:, :, h] = softmax(sim, axis=-1) @ v
    y = out.reshape(bsz, n, heads * dh) @ sd[p + "to_out.0.weight"].T
    return dalle2_layer_norm(y, sd[p + "to_out.1.g"], eps=eps)


def prior_network(sd, prefix, x_noisy, t, cond, *, depth, heads, mode="pos_emb", eps=1e-5):
    """``PriorNetwork.forward`` (drop probabilities 0) from the original keys ``<prefix>net.*``: the last
    ``num_tokens`` outputs of the transformer over ``[cond, time token, x_noisy + learned_query]``.
    ``eps``: the LayerNorms' (dalle2: 1e-5 for float32 inputs, 1e-3 for any other dtype)."""
    n_ = prefix + "net."
    bsz, n_tok, dim = x_noisy.shape
    half = dim // 2
    f = np.exp(-np.arange(half) * math.log(10000) / (half - 1))
    e = np.asarray(t, dtype=np.float64).reshape(-1, 1) * f[None]
    e = np.broadcast_to(np.concatenate([np.sin(e), np.cos(e)], -1), (bsz, dim))
    m = n_ + "to_time_embeds.0.1.net."
    e = _silu(e @ sd[m + "0.0.weight"].T + sd[m + "0.0.bias"])
    e = _silu(e @ sd[m + "1.0.weight"].T + sd[m + "1.0.bias"])
    time = (e @ sd[m + "2.weight"].T + sd[m + "2.bias"])[:, None, :]
    query = sd[n_ + "learned_query"]
    parts = [cond, time, x_noisy + query if mode == "pos_emb" else x_noisy]
    if mode == "token":
        parts.append(np.broadcast_to(query, (bsz, *query.shape)))
    tokens = np.concatenate(parts, axis=1)
    if mode == "all_pos_emb":
        tokens = tokens + query
    n = tokens.shape[1]
    tr = n_ + "causal_transformer."
    table = sd[tr + "rel_pos_bias.relative_attention_bias.weight"]             # (buckets, heads)
    bias = np.zeros((heads, n, n + 1))
    for i in range(n):
        for j in range(n + 1):                                                 # column 0: the null key
            bias[:, i, j] = table[rel_pos_bucket(max(i - j, 0), num_buckets=len(table))]
    freqs = sd[tr + "layers.0.0.rotary_emb.freqs"]
    for k in range(depth):
        p = f"{tr}layers.{k}."
        tokens = _prior_attention(tokens, sd, p + "0.", bias, freqs, heads, eps) + tokens
        u = dalle2_layer_norm(tokens, sd[p + "1.0.g"], eps=eps) @ sd[p + "1.1.weight"].T
        a, gate = np.split(u, 2, axis=-1)
        tokens = (a * _silu(gate)) @ sd[p + "1.5.weight"].T + tokens
    out = dalle2_layer_norm(tokens, sd[tr + "norm.g"], stable=True, eps=eps) @ sd[tr + "project_out.weight"].T
    return out[:, -n_tok:]


def ddim_times(total, timesteps):
    """``p_sample_loop_ddim``'s times: ``int(linspace(-1, T, timesteps + 1)[:-1])`` reversed, paired."""
    times = [int(np.trunc(v)) for v in np.linspace(-1.0, total, timesteps + 1)[:-1]][::-1]
    return list(zip(times[:-1], times[1:]))


def prior_sample(sd, prefix, cond, noise, *, timesteps, depth, heads, eta=1.0, net=None):
    """dalle2 ``p_sample_loop`` with fixed draws (``noise[0]`` = x_T, ``noise[i + 1]`` = step i's noise):
    DDIM on ``alphas_cumprod_prev`` below the training steps, ancestral DDPM at them; no final rescaling.
    ``net(x, t)``: the x₀ prediction (default: :func:`prior_network` on ``cond``)."""
    sched = {name: sd[f"{prefix}noise_scheduler.{name}"] for name in SCHEDULE_NAMES}
    total = len(sched["betas"])
    if net is None:
        net = lambda x, t: prior_network(sd, prefix, x, t, cond, depth=depth, heads=heads)  # noqa: E731
    x = noise[0]
    if timesteps == total:
        for i, t in enumerate(reversed(range(total)), start=1):
            x0 = net(x, t)
            mean = sched["posterior_mean_coef1"][t] * x0 + sched["posterior_mean_coef2"][t] * x
            x = mean + (t > 0) * np.exp(0.5 * sched["posterior_log_variance_clipped"][t]) * noise[i]
        return x
    alphas = sched["alphas_cumprod_prev"]
    for i, (t, t_next) in enumerate(ddim_times(total, timesteps), start=1):
        x0 = net(x, t)
        eps = (sched["sqrt_recip_alphas_cumprod"][t] * x - x0) / sched["sqrt_recipm1_alphas_cumprod"][t]
        if t_next < 0:
            x = x0
            continue
        a, a_next = alphas[t], alphas[t_next]
        c1 = eta * math.sqrt((1 - a / a_next) * (1 - a_next) / (1 - a))
        c2 = math.sqrt(1 - a_next - c1 ** 2)
        x = x0 * math.sqrt(a_next) + c1 * (noise[i] if t_next > 0 else 0.0) + c2 * eps
    return x


# -- dalle2's own DiffusionPriorNetwork (MindEye1's 1×768 prior, nousr's LAION config) ----------------------
def _causal_bias(table, n, causal=True):
    """``RelPosBias(n, n + 1)`` (column 0: the null key) plus ``-inf`` where key token ``j − 1`` lies after
    query ``i`` (``CausalTransformer``'s attention is causal; the null key is always visible)."""
    heads = table.shape[1]
    bias = np.zeros((heads, n, n + 1))
    for i in range(n):
        for j in range(n + 1):
            bias[:, i, j] = table[rel_pos_bucket(max(i - j, 0), num_buckets=len(table))]
            if causal and j - 1 > i:
                bias[:, i, j] = -np.inf
    return bias


def network_prior(sd, prefix, x_noisy, t, cond, *, depth, heads, drop_cond=False, causal=True, eps=1e-5):
    """``DiffusionPriorNetwork.forward`` (no text encodings, drop probabilities 0, or 1 with ``drop_cond``)
    from the original keys ``<prefix>net.*``: ``x_noisy`` (``image_embed``) and ``cond`` (``text_embed``) are
    ``(batch, dim)``; the causal transformer runs over ``[null_text_encodings (L), text_embed, time embedding
    row t, image_embed, learned_query]`` and the last token's output, ``(batch, dim)``, is returned. A layer
    with ``1.3.g`` has the NormFormer LayerNorm after its SwiGLU; ``project_out`` is used when present."""
    n_, tr = prefix + "net.", prefix + "net.causal_transformer."
    bsz, dim = x_noisy.shape
    text, image = cond, x_noisy
    if drop_cond:
        text = np.broadcast_to(sd[n_ + "null_text_embeds"].reshape(dim), (bsz, dim))
        image = np.broadcast_to(sd[n_ + "null_image_embed"].reshape(dim), (bsz, dim))
    enc = sd[n_ + "null_text_encodings"].reshape(-1, dim)
    time = sd[n_ + "to_time_embeds.0.weight"][np.broadcast_to(np.asarray(t).reshape(-1), (bsz,))]
    query = np.broadcast_to(sd[n_ + "learned_query"], (bsz, 1, dim))
    tokens = np.concatenate([np.broadcast_to(enc, (bsz, *enc.shape)), text[:, None], time[:, None],
                             image[:, None], query], axis=1)
    bias = _causal_bias(sd[tr + "rel_pos_bias.relative_attention_bias.weight"], tokens.shape[1], causal)
    freqs = sd[tr + "layers.0.0.rotary_emb.freqs"] if depth else np.zeros(0)
    for k in range(depth):
        p = f"{tr}layers.{k}."
        tokens = _prior_attention(tokens, sd, p + "0.", bias, freqs, heads, eps) + tokens
        u = dalle2_layer_norm(tokens, sd[p + "1.0.g"], eps=eps) @ sd[p + "1.1.weight"].T
        a, gate = np.split(u, 2, axis=-1)
        h = a * _silu(gate)
        if p + "1.3.g" in sd:
            h = dalle2_layer_norm(h, sd[p + "1.3.g"], eps=eps)
        tokens = h @ sd[p + "1.5.weight"].T + tokens
    out = dalle2_layer_norm(tokens, sd[tr + "norm.g"], stable=True, eps=eps)
    if tr + "project_out.weight" in sd:
        out = out @ sd[tr + "project_out.weight"].T
    return out[:, -1]


def network_prior_sample(sd, prefix, cond, noise, *, timesteps, depth, heads, eta=1.0):
    """``DiffusionPrior.p_sample_loop`` of the network above with fixed draws (``noise[0]`` = x_T, then one
    per step), divided at the end by ``image_embed_scale = √dim`` (dalle2's default)."""
    net = lambda x, t: network_prior(sd, prefix, x, t, cond, depth=depth, heads=heads)  # noqa: E731
    x = prior_sample(sd, prefix, cond, noise, timesteps=timesteps, depth=depth, heads=heads, eta=eta, net=net)
    return x / math.sqrt(cond.shape[-1])

"""SAM's mask decoder: a two-way transformer between prompt tokens and the image embedding,
then an upscaling head whose per-pixel features are weighted by per-mask token vectors.

Several prompts often share one image (one click per tracked object). Then the image copy
stays a single batch entry for as long as it is the same for every prompt: token-to-image
attention runs over one key set with all prompts' queries stacked, and only after the
first image-to-token update does the image branch grow to one copy per prompt.
"""

import torch
from torch import nn

from .common import MLP, Attention, LayerNorm2d, MLPBlock


def _head_weights(linear, heads):
    """A projection's weight as (heads, head_dim, in_dim): row h * head_dim + j of the
    weight is output channel j of head h."""
    return linear.weight.view(heads, -1, linear.weight.shape[-1])


def _autocast_on(tensor):
    try:
        return torch.is_autocast_enabled(tensor.device.type)
    except RuntimeError:  # a device type without autocast (e.g. meta)
        return False


def _factor_through_tokens(attn):
    """Whether attention may skip projecting the image tokens (see below): only without
    attention dropout, which acts on the probabilities the direct path never forms."""
    return not (attn.training and attn.dropout_p > 0)


def _attend_tokens_to_image(attn, queries, image_keys, image_values):
    """Cross-attention of prompt tokens (B, N, C) to image tokens (1 or B, HW, C).

    Two exact rewrites keep the cost low; both return what ``attn(q, k, v)`` does.

    * Direct: with one shared image, every query attends to the same keys, so all B x N
      queries go through a single attention call and the image is projected once.
    * Factored: there are far fewer query rows (heads x tokens) than image tokens, so
      the image tokens are not projected at all. The query goes through the key
      projection instead (q_h W_k,h: one C-vector per head and token; the key bias only
      shifts a whole row of scores), and the value projection is applied after pooling
      the raw image tokens with the attention weights (the value bias passes through
      unchanged because the weights sum to one). Per image token this costs heads x
      tokens multiply-adds per channel instead of the inner width; it is used when that
      is smaller.
    """
    b, n, c = queries.shape
    bk = image_keys.shape[0]
    heads, inner = attn.num_heads, attn.internal_dim
    if b * heads * n >= bk * inner or not _factor_through_tokens(attn):
        if bk == 1 and b > 1:
            out = attn(queries.reshape(1, b * n, c), image_keys, image_values)
            return out.reshape(b, n, -1)
        return attn(queries, image_keys, image_values)

    head_dim = inner // heads
    q = attn.q_proj(queries).view(b, n, heads, head_dim).transpose(1, 2)  # (B, H, N, d)
    q_in_image_space = torch.matmul(q, _head_weights(attn.k_proj, heads)) * head_dim ** -0.5
    rows = q_in_image_space.reshape(bk, -1, c)  # (Bk, B/Bk * H * N, C)
    # The key bias shifts each row by a constant; kept (it is free in the product's
    # initial value) so that the bias stays in the graph and gets its (zero) gradient.
    row_shift = (q * attn.k_proj.bias.view(heads, 1, head_dim)).sum(-1, keepdim=True)
    row_shift = (row_shift * head_dim ** -0.5).reshape(bk, -1, 1).to(rows.dtype)
    weights = torch.baddbmm(row_shift, rows, image_keys.transpose(1, 2))
    weights = weights.softmax(dim=-1, dtype=torch.float32)
    pooled = torch.matmul(weights.to(image_values.dtype), image_values)  # (Bk, rows, C)
    pooled = pooled.view(b, heads, n, c)
    out = torch.matmul(pooled, _head_weights(attn.v_proj, heads).transpose(1, 2))
    out = out + attn.v_proj.bias.view(heads, 1, head_dim)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, inner))


def _attend_image_to_tokens(attn, image_queries, token_keys, token_values, residual):
    """``residual`` + cross-attention of image tokens (1 or B, HW, C) to prompt tokens
    (B, N, C); the result has batch B.

    * Direct: a shared image is projected to queries once and broadcast over the prompts.
    * Factored: each image token's scores against the H x N token keys are one product
      with the keys moved through the query projection (k_h W_q,h, plus the query bias'
      share b_q,h . k_h per column); its output is one product of the attention weights
      with the values moved through the output projection (v_h W_o,h^T). The output bias
      is spread over the heads (each head's weights sum to one), so the whole output and
      the residual are a single fused multiply-add. Used when H x N is below the inner
      width, which it is for a few clicks.
    """
    b, n, c = token_keys.shape
    bk, hw, _ = image_queries.shape
    heads, inner = attn.num_heads, attn.internal_dim
    if 2 * b * heads * n >= (bk + b) * inner or not _factor_through_tokens(attn):
        q = attn.split_heads(attn.q_proj(image_queries))
        if q.shape[0] != b:
            q = q.expand(b, -1, -1, -1)
        k = attn.split_heads(attn.k_proj(token_keys))
        v = attn.split_heads(attn.v_proj(token_values))
        return residual + attn.attend(q, k, v)

    head_dim = inner // heads
    scale = head_dim ** -0.5
    k = attn.k_proj(token_keys).view(b, n, heads, head_dim).transpose(1, 2)  # (B, H, N, d)
    v = attn.v_proj(token_values).view(b, n, heads, head_dim).transpose(1, 2)
    key_rows = torch.matmul(k, _head_weights(attn.q_proj, heads)) * scale  # (B, H, N, C)
    row_bias = (k * attn.q_proj.bias.view(heads, 1, head_dim)).sum(-1, keepdim=True) * scale
    # Scores are laid out (B, H, N, HW) so that the softmax over the N tokens runs along
    # a long contiguous pixel axis (a size-N innermost softmax is many times slower).
    key_rows = key_rows.reshape(bk, -1, c)  # a shared image takes all B prompts' rows
    scores = torch.baddbmm(row_bias.reshape(bk, -1, 1).to(key_rows.dtype), key_rows,
                           image_queries.transpose(1, 2))
    weights = scores.view(b, heads, n, hw).softmax(dim=2, dtype=torch.float32)
    out_weight = attn.out_proj.weight.view(c, heads, head_dim).permute(1, 2, 0)  # (H, d, C)
    value_rows = torch.matmul(v, out_weight) + attn.out_proj.bias / heads  # (B, H, N, C)
    weights = weights.view(b, heads * n, hw).transpose(1, 2).to(value_rows.dtype)
    value_rows = value_rows.reshape(b, heads * n, c)
    if _autocast_on(residual) or residual.dtype != value_rows.dtype:
        # Keep the residual stream in its own precision (a fused product would round it).
        return residual + torch.matmul(weights, value_rows)
    return torch.baddbmm(residual, weights, value_rows)


class TwoWayAttentionBlock(nn.Module):
    """Tokens self-attend, attend to the image, pass an MLP; then the image attends back.

    The first block's self-attention sees no positional encoding and has no residual
    (the tokens are the encoding there).
    """

    def __init__(self, embedding_dim, num_heads, mlp_dim=2048, activation=nn.ReLU,
                 attention_downsample_rate=2, skip_first_layer_pe=False, sam1_names=False):
        super().__init__()
        rate = attention_downsample_rate
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        if sam1_names:
            self.mlp = MLPBlock(embedding_dim, mlp_dim, activation=activation)
        else:
            self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2,
                           activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, downsample_rate=rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        """queries (B, N, C) with their encoding; keys (1 or B, HW, C), key_pe broadcastable
        to keys. Returns the updated (queries, keys); keys then have batch B."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + _attend_tokens_to_image(
            self.cross_attn_token_to_image, q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        # ``keys`` has not changed since ``k`` was formed, so it is reused here.
        q = queries + query_pe
        keys = self.norm4(_attend_image_to_tokens(
            self.cross_attn_image_to_token, k, q, queries, residual=keys))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a last token-to-image attention.

    ``forward(image_embedding, image_pe, point_embedding)`` takes a (B or 1, C, H, W) image,
    its (1, C, H, W) encoding and (B, N, C) tokens, and returns the tokens (B, N, C) and the
    image tokens (B, HW, C). A batch-1 image is shared by all B token sets.
    ``sam1_names``: the blocks' MLPs carry SAM (2023)'s parameter names (``mlp.lin1``)
    instead of SAM 2's (``mlp.layers.0``); the computation is the same.
    """

    def __init__(self, depth, embedding_dim, num_heads, mlp_dim, activation=nn.ReLU,
                 attention_downsample_rate=2, sam1_names=False):
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim=mlp_dim,
                                 activation=activation,
                                 attention_downsample_rate=attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0), sam1_names=sam1_names)
            for i in range(depth))
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        b = point_embedding.shape[0]
        if image_embedding.shape[0] not in (1, b):
            raise ValueError(f"image batch {image_embedding.shape[0]} vs {b} prompt sets")
        # One copy into token-major order: every linear layer then reads contiguous rows
        # (a no-op for a channels-last input).
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2)

        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)

        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + _attend_tokens_to_image(
            self.final_attn_token_to_image, q, k, keys))
        if keys.shape[0] != b:
            keys = keys.expand(b, -1, -1)
        return queries, keys


def _deconv2x2_channel_major(x, conv):
    """A kernel-2, stride-2 transposed convolution as one matrix product.

    ``x`` is (B, G, Cin, P): G groups of P input pixels, channels-major. Each input pixel
    makes its own 2 x 2 output block, so the result is (B, G, 4 * Cout, P) with rows
    ordered (row offset, column offset, channel) and the pixels left where they were;
    interleaving the blocks into an image is deferred (see ``_masks_from_image_tokens``).
    """
    b, g, cin, p = x.shape
    w = conv.weight  # (Cin, Cout, 2, 2)
    weight = w.permute(2, 3, 1, 0).reshape(1, -1, cin).expand(b * g, -1, -1)
    x = x.reshape(b * g, cin, p)
    if conv.bias is None:
        out = torch.bmm(weight, x)
    else:
        out = torch.baddbmm(conv.bias.repeat(4).unsqueeze(-1), weight, x)
    return out.view(b, g, -1, p)


class MaskDecoder(nn.Module):
    """Predicts mask logits, IoU estimates, output tokens and object scores from an image
    embedding and prompt embeddings.

    Output tokens, in order: [object score] (if ``pred_obj_scores``), IoU, then
    ``num_multimask_outputs + 1`` mask tokens (token 0 is the single-mask answer).
    """

    def __init__(self, *, transformer_dim, transformer, num_multimask_outputs=3,
                 activation=nn.GELU, iou_head_depth=3, iou_head_hidden_dim=256,
                 use_high_res_features=False, iou_prediction_use_sigmoid=False,
                 dynamic_multimask_via_stability=False, dynamic_multimask_stability_delta=0.05,
                 dynamic_multimask_stability_thresh=0.98, pred_obj_scores=False,
                 pred_obj_scores_mlp=False, use_multimask_token_for_obj_ptr=False):
        super().__init__()
        dim = transformer_dim
        self.transformer_dim = dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1

        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        # Two 2x transposed convolutions: 1/16 -> 1/4 of the input image.
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            activation(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            # Applied by the model to the backbone's stride-4 / stride-8 maps; the decoder
            # receives their outputs as ``high_res_features``.
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1, stride=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens,
                                       iou_head_depth, sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head = (MLP(dim, dim, 1, 3) if pred_obj_scores_mlp
                                        else nn.Linear(dim, 1))

        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh
        # How B > 1 prompt sets are upscaled into masks: one at a time (True), all at once
        # (False), or by device (None): one at a time on a CPU, where per-prompt passes
        # stay cache-sized, all at once elsewhere, where a loop launches every kernel once
        # per prompt set: a training step of 8 clips dispatched 133k operators one at a
        # time and 79k at once (1 clip: 81k), and a GPU step is bound by that count.
        self.per_prompt_upscaling = None

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                dense_prompt_embeddings, multimask_output, repeat_image,
                high_res_features=None):
        """Returns ``(masks, iou_pred, sam_tokens_out, object_score_logits)``.

        masks (B, M, 4h, 4w) logits and iou_pred (B, M), with M = num_multimask_outputs if
        ``multimask_output`` else 1; sam_tokens_out (B, M', C) the mask tokens for object
        pointers; object_score_logits (B, 1) (10.0, "present", without an object head).
        ``repeat_image``: one image embedding (batch 1) serves all B prompt sets.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
            repeat_image, high_res_features)

        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]

        # Object pointers come from the single-mask token unless the candidates are returned
        # and the model was trained to take its pointer from them.
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, :1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                      dense_prompt_embeddings, repeat_image, high_res_features=None):
        """All ``num_mask_tokens`` masks and IoUs, the mask tokens and the object score."""
        sparse = sparse_prompt_embeddings
        b = sparse.shape[0]
        learned = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            learned.insert(0, self.obj_score_token.weight)
        out_tokens = torch.cat(learned, dim=0)
        tokens = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1).to(sparse.dtype),
                            sparse), dim=1)

        src = image_embeddings
        dense = dense_prompt_embeddings
        if repeat_image and src.shape[0] == 1:
            # Keep a single image copy while the dense prompt is the same for every prompt
            # set (the broadcast "no mask" embedding); otherwise broadcasting makes B copies.
            if dense.shape[0] > 1 and dense.stride(0) == 0:
                dense = dense[:1]
        elif src.shape[0] != b:
            raise ValueError(f"{src.shape[0]} image embeddings for {b} prompt sets; pass "
                             "repeat_image=True with one image to share it")
        src = src + dense
        if image_pe.shape[0] != 1:
            raise ValueError("image_pe must have batch size 1 (from get_dense_pe())")
        h, w = src.shape[-2:]

        hs, image_tokens = self.transformer(src, image_pe, tokens)
        first = 1 if self.pred_obj_scores else 0
        iou_token_out = hs[:, first]
        mask_tokens_out = hs[:, first + 1:first + 1 + self.num_mask_tokens]

        hyper_in = torch.stack([mlp(mask_tokens_out[:, i])
                                for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        per_prompt = self.per_prompt_upscaling
        if per_prompt is None:
            per_prompt = image_tokens.device.type == "cpu"
        if b == 1 or not per_prompt:
            masks = self._masks_from_image_tokens(image_tokens, h, w, hyper_in, high_res_features)
        else:
            # One prompt set at a time: the upscaled maps are 8x the image tokens' size, and
            # per-prompt passes stay cache-sized (and avoid slow broadcast adds over them).
            masks = torch.cat([
                self._masks_from_image_tokens(
                    image_tokens[i:i + 1], h, w, hyper_in[i:i + 1],
                    None if high_res_features is None else
                    [f if f.shape[0] == 1 else f[i:i + 1] for f in high_res_features])
                for i in range(b)])

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _masks_from_image_tokens(self, image_tokens, h, w, hyper_in, high_res_features):
        """Upscale (B, h*w, C) image tokens 4x and project them on (B, M, C/8) mask vectors.

        Computes ``output_upscaling`` (with the high-res features added before each stage's
        norm / activation) without ever interleaving a wide feature map: features stay
        channels-major with the output pixels split by their offsets inside the 2 x 2
        blocks, (B, dy, dx, [ey, ex,] C', h, w). Pixels stay the innermost axis, so the
        high-res maps are read along rows (stride 2 or 4) rather than across channels,
        and only the M mask logits are finally interleaved into image layout.
        """
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        b = image_tokens.shape[0]
        c1, c2 = deconv1.out_channels, deconv2.out_channels
        feat_s0, feat_s1 = high_res_features if self.use_high_res_features else (None, None)

        # Stage 1: (B, dy, dx, c1, h, w); output pixel (2i + dy, 2j + dx).
        x = _deconv2x2_channel_major(image_tokens.transpose(1, 2).unsqueeze(1), deconv1)
        x = x.view(b, 2, 2, c1, h, w)
        if feat_s1 is not None:
            x = x + feat_s1.reshape(-1, c1, h, 2, w, 2).permute(0, 3, 5, 1, 2, 4)
        # LayerNorm2d over the channel axis, which is not the innermost one here.
        x = x - x.mean(dim=3, keepdim=True)
        x = x * torch.rsqrt(x.square().mean(dim=3, keepdim=True) + norm1.eps)
        x = act1(torch.addcmul(norm1.bias.view(c1, 1, 1), x, norm1.weight.view(c1, 1, 1)))

        # Stage 2: (B, dy, dx, ey, ex, c2, h, w); output pixel (4i + 2dy + ey, 4j + 2dx + ex).
        x = _deconv2x2_channel_major(x.reshape(b, 4, c1, h * w), deconv2)
        x = x.view(b, 2, 2, 2, 2, c2, h, w)
        if feat_s0 is not None:
            x = x + feat_s0.reshape(-1, c2, h, 2, 2, w, 2, 2).permute(0, 3, 6, 4, 7, 1, 2, 5)
        x = act2(x)

        m = hyper_in.shape[1]
        logits = torch.matmul(hyper_in.to(x.dtype).unsqueeze(1), x.reshape(b, 16, c2, h * w))
        # (B, dy, dx, ey, ex, M, h, w) -> (B, M, h, dy, ey, w, dx, ex) -> (B, M, 4h, 4w)
        logits = logits.view(b, 2, 2, 2, 2, m, h, w).permute(0, 5, 6, 1, 3, 7, 2, 4)
        return logits.reshape(b, m, 4 * h, 4 * w)

    def _get_stability_scores(self, mask_logits):
        """IoU between the masks thresholded at +delta and at -delta (1 when both empty):
        near 1 when few logits sit close to the decision boundary."""
        flat = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        inner = (flat > delta).sum(-1).float()
        outer = (flat > -delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer.clamp(min=1), torch.ones_like(outer))

    def _dynamic_multimask_via_stability(self, all_mask_logits, all_iou_scores):
        """Single-mask output that falls back to the best-scored candidate mask (tokens
        1..M) wherever the single-mask token's mask is unstable."""
        cand_logits, cand_iou = all_mask_logits[:, 1:], all_iou_scores[:, 1:]
        best = cand_iou.argmax(dim=-1, keepdim=True)  # (B, 1)
        best_iou = cand_iou.gather(1, best)
        hw = cand_logits.shape[-2:]
        best_logits = cand_logits.gather(
            1, best[:, :, None, None].expand(-1, 1, *hw))

        single_logits, single_iou = all_mask_logits[:, :1], all_iou_scores[:, :1]
        stable = self._get_stability_scores(single_logits) >= \
            self.dynamic_multimask_stability_thresh  # (B, 1)
        masks = torch.where(stable[:, :, None, None], single_logits, best_logits)
        iou = torch.where(stable, single_iou, best_iou)
        return masks, iou

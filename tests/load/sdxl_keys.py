"""Tensor names and shapes of SDXL components (diffusers UNet2DConditionModel,
AutoencoderKL, CLIPTextModel[WithProjection]) and their SGM/A1111 single-file
names, following diffusers' convert_diffusers_to_original_sdxl.py. An
implementation independent of the C name tables (workers/sdxl/sdx_namemap.c),
used by the load tests to build single files."""

# ---------------------------------------------------------------- diffusers shapes

def resnet(p, cin, cout, temb, out):
    out[p + "norm1.weight"] = [cin]
    out[p + "norm1.bias"] = [cin]
    out[p + "conv1.weight"] = [cout, cin, 3, 3]
    out[p + "conv1.bias"] = [cout]
    if temb:
        out[p + "time_emb_proj.weight"] = [cout, temb]
        out[p + "time_emb_proj.bias"] = [cout]
    out[p + "norm2.weight"] = [cout]
    out[p + "norm2.bias"] = [cout]
    out[p + "conv2.weight"] = [cout, cout, 3, 3]
    out[p + "conv2.bias"] = [cout]
    if cin != cout:
        out[p + "conv_shortcut.weight"] = [cout, cin, 1, 1]
        out[p + "conv_shortcut.bias"] = [cout]


def transformer(p, c, depth, ctx, out):
    out[p + "norm.weight"] = [c]
    out[p + "norm.bias"] = [c]
    out[p + "proj_in.weight"] = [c, c]
    out[p + "proj_in.bias"] = [c]
    for k in range(depth):
        b = p + "transformer_blocks.%d." % k
        for n in ("norm1", "norm2", "norm3"):
            out[b + n + ".weight"] = [c]
            out[b + n + ".bias"] = [c]
        for a, kv in (("attn1", c), ("attn2", ctx)):
            out[b + a + ".to_q.weight"] = [c, c]
            out[b + a + ".to_k.weight"] = [c, kv]
            out[b + a + ".to_v.weight"] = [c, kv]
            out[b + a + ".to_out.0.weight"] = [c, c]
            out[b + a + ".to_out.0.bias"] = [c]
        out[b + "ff.net.0.proj.weight"] = [8 * c, c]
        out[b + "ff.net.0.proj.bias"] = [8 * c]
        out[b + "ff.net.2.weight"] = [c, 4 * c]
        out[b + "ff.net.2.bias"] = [c]
    out[p + "proj_out.weight"] = [c, c]
    out[p + "proj_out.bias"] = [c]


def unet(boc, down_x, up_x, tl, ctx, adm, lpb=2):
    out, L, temb = {}, len(boc), boc[0] * 4
    out["conv_in.weight"] = [boc[0], 4, 3, 3]
    out["conv_in.bias"] = [boc[0]]
    out["time_embedding.linear_1.weight"] = [temb, boc[0]]
    out["time_embedding.linear_1.bias"] = [temb]
    out["time_embedding.linear_2.weight"] = [temb, temb]
    out["time_embedding.linear_2.bias"] = [temb]
    out["add_embedding.linear_1.weight"] = [temb, adm]
    out["add_embedding.linear_1.bias"] = [temb]
    out["add_embedding.linear_2.weight"] = [temb, temb]
    out["add_embedding.linear_2.bias"] = [temb]
    prev = boc[0]
    for i in range(L):
        c = boc[i]
        for j in range(lpb):
            resnet("down_blocks.%d.resnets.%d." % (i, j), prev if j == 0 else c, c, temb, out)
            if down_x[i]:
                transformer("down_blocks.%d.attentions.%d." % (i, j), c, tl[i], ctx, out)
        if i < L - 1:
            out["down_blocks.%d.downsamplers.0.conv.weight" % i] = [c, c, 3, 3]
            out["down_blocks.%d.downsamplers.0.conv.bias" % i] = [c]
        prev = c
    c = boc[-1]
    resnet("mid_block.resnets.0.", c, c, temb, out)
    transformer("mid_block.attentions.0.", c, tl[-1], ctx, out)
    resnet("mid_block.resnets.1.", c, c, temb, out)
    rev, rtl = boc[::-1], tl[::-1]
    prev = rev[0]
    for i in range(L):
        c, inp = rev[i], rev[min(i + 1, L - 1)]
        for j in range(lpb + 1):
            skip = inp if j == lpb else c
            rin = prev if j == 0 else c
            resnet("up_blocks.%d.resnets.%d." % (i, j), rin + skip, c, temb, out)
            if up_x[i]:
                transformer("up_blocks.%d.attentions.%d." % (i, j), c, rtl[i], ctx, out)
        if i < L - 1:
            out["up_blocks.%d.upsamplers.0.conv.weight" % i] = [c, c, 3, 3]
            out["up_blocks.%d.upsamplers.0.conv.bias" % i] = [c]
        prev = c
    out["conv_norm_out.weight"] = [boc[0]]
    out["conv_norm_out.bias"] = [boc[0]]
    out["conv_out.weight"] = [4, boc[0], 3, 3]
    out["conv_out.bias"] = [4]
    return out


def vae(boc=(128, 256, 512, 512), lpb=2):
    out, L = {}, len(boc)

    def mid(p, c):
        resnet(p + "mid_block.resnets.0.", c, c, 0, out)
        a = p + "mid_block.attentions.0."
        out[a + "group_norm.weight"] = [c]
        out[a + "group_norm.bias"] = [c]
        for n in ("to_q", "to_k", "to_v", "to_out.0"):
            out[a + n + ".weight"] = [c, c]
            out[a + n + ".bias"] = [c]
        resnet(p + "mid_block.resnets.1.", c, c, 0, out)

    out["encoder.conv_in.weight"] = [boc[0], 3, 3, 3]
    out["encoder.conv_in.bias"] = [boc[0]]
    prev = boc[0]
    for i in range(L):
        for j in range(lpb):
            resnet("encoder.down_blocks.%d.resnets.%d." % (i, j), prev if j == 0 else boc[i],
                   boc[i], 0, out)
        if i < L - 1:
            out["encoder.down_blocks.%d.downsamplers.0.conv.weight" % i] = [boc[i], boc[i], 3, 3]
            out["encoder.down_blocks.%d.downsamplers.0.conv.bias" % i] = [boc[i]]
        prev = boc[i]
    mid("encoder.", boc[-1])
    out["encoder.conv_norm_out.weight"] = [boc[-1]]
    out["encoder.conv_norm_out.bias"] = [boc[-1]]
    out["encoder.conv_out.weight"] = [8, boc[-1], 3, 3]
    out["encoder.conv_out.bias"] = [8]
    out["quant_conv.weight"] = [8, 8, 1, 1]
    out["quant_conv.bias"] = [8]
    out["post_quant_conv.weight"] = [4, 4, 1, 1]
    out["post_quant_conv.bias"] = [4]
    out["decoder.conv_in.weight"] = [boc[-1], 4, 3, 3]
    out["decoder.conv_in.bias"] = [boc[-1]]
    mid("decoder.", boc[-1])
    rev = boc[::-1]
    prev = rev[0]
    for i in range(L):
        for j in range(lpb + 1):
            resnet("decoder.up_blocks.%d.resnets.%d." % (i, j), prev if j == 0 else rev[i],
                   rev[i], 0, out)
        if i < L - 1:
            out["decoder.up_blocks.%d.upsamplers.0.conv.weight" % i] = [rev[i], rev[i], 3, 3]
            out["decoder.up_blocks.%d.upsamplers.0.conv.bias" % i] = [rev[i]]
        prev = rev[i]
    out["decoder.conv_norm_out.weight"] = [boc[0]]
    out["decoder.conv_norm_out.bias"] = [boc[0]]
    out["decoder.conv_out.weight"] = [3, boc[0], 3, 3]
    out["decoder.conv_out.bias"] = [3]
    return out


def clip(h, inter, layers, proj):
    out = {"text_model.embeddings.token_embedding.weight": [49408, h],
           "text_model.embeddings.position_embedding.weight": [77, h]}
    for i in range(layers):
        p = "text_model.encoder.layers.%d." % i
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[p + "self_attn." + n + ".weight"] = [h, h]
            out[p + "self_attn." + n + ".bias"] = [h]
        for n in ("layer_norm1", "layer_norm2"):
            out[p + n + ".weight"] = [h]
            out[p + n + ".bias"] = [h]
        out[p + "mlp.fc1.weight"] = [inter, h]
        out[p + "mlp.fc1.bias"] = [inter]
        out[p + "mlp.fc2.weight"] = [h, inter]
        out[p + "mlp.fc2.bias"] = [h]
    out["text_model.final_layer_norm.weight"] = [h]
    out["text_model.final_layer_norm.bias"] = [h]
    if proj:
        out["text_projection.weight"] = [proj, h]
    return out


# ---------------------------------------------------------------- to SGM names

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
          ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
          ("conv_shortcut", "skip_connection")]


def sgm_unet(d, up_x, lpb=2):
    out = {}
    top = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
           "time_embedding.linear_2.": "time_embed.2.", "add_embedding.linear_1.": "label_emb.0.0.",
           "add_embedding.linear_2.": "label_emb.0.2.", "conv_norm_out.": "out.0.",
           "conv_out.": "out.2."}
    for k, shape in d.items():
        parts = k.split(".")
        n = None
        for a, b in top.items():
            if k.startswith(a):
                n = b + k[len(a):]
        if n is None:
            blk, i = parts[0], int(parts[1]) if parts[1].isdigit() else None
            if blk == "down_blocks" and parts[2] == "downsamplers":
                n = "input_blocks.%d.0.op.%s" % ((lpb + 1) * (i + 1), parts[-1])
            elif blk == "down_blocks":
                j = int(parts[3])
                n = "input_blocks.%d.%d." % ((lpb + 1) * i + j + 1,
                                             0 if parts[2] == "resnets" else 1)
                rest = ".".join(parts[4:])
                n += rest
            elif blk == "up_blocks" and parts[2] == "upsamplers":
                n = "output_blocks.%d.%d.conv.%s" % ((lpb + 1) * i + lpb, 2 if up_x[i] else 1,
                                                     parts[-1])
            elif blk == "up_blocks":
                j = int(parts[3])
                n = "output_blocks.%d.%d." % ((lpb + 1) * i + j, 0 if parts[2] == "resnets" else 1)
                n += ".".join(parts[4:])
            elif blk == "mid_block":
                j = int(parts[2])
                n = "middle_block.%d." % (1 if parts[1] == "attentions" else 2 * j)
                n += ".".join(parts[3:])
            kind = parts[1] if blk == "mid_block" else parts[2]
            if kind == "resnets":
                for a, b in RESNET:
                    n = n.replace("." + a + ".", "." + b + ".")
        out["model.diffusion_model." + n] = shape
    return out


def sgm_vae(d, L=4):
    out = {}
    for k, shape in d.items():
        n = k
        parts = k.split(".")
        if k.startswith("encoder.down_blocks."):
            i = int(parts[2])
            if parts[3] == "resnets":
                n = "encoder.down.%d.block.%s." % (i, parts[4]) + ".".join(parts[5:])
            else:
                n = "encoder.down.%d.downsample." % i + ".".join(parts[5:])
        elif k.startswith("decoder.up_blocks."):
            i = L - 1 - int(parts[2])
            if parts[3] == "resnets":
                n = "decoder.up.%d.block.%s." % (i, parts[4]) + ".".join(parts[5:])
            else:
                n = "decoder.up.%d.upsample." % i + ".".join(parts[5:])
        elif ".mid_block.resnets." in k:
            n = "%s.mid.block_%d." % (parts[0], int(parts[3]) + 1) + ".".join(parts[4:])
        elif ".mid_block.attentions.0." in k:
            m = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
            n = "%s.mid.attn_1.%s.%s" % (parts[0], m[parts[4]], parts[-1])
            if parts[-1] == "weight" and parts[4] != "group_norm":
                shape = shape + [1, 1]
        n = n.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        out["first_stage_model." + n] = shape
    return out


def sgm_te2(d, prefix):
    out = {}
    layers = {}
    for k, shape in d.items():
        parts = k.split(".")
        if k == "text_projection.weight":
            out[prefix + "text_projection"] = shape[::-1]
        elif k.endswith("token_embedding.weight"):
            out[prefix + "token_embedding.weight"] = shape
        elif k.endswith("position_embedding.weight"):
            out[prefix + "positional_embedding"] = shape
        elif k.startswith("text_model.final_layer_norm."):
            out[prefix + "ln_final." + parts[-1]] = shape
        else:
            i, p = int(parts[3]), prefix + "transformer.resblocks.%s." % parts[3]
            sub = ".".join(parts[4:])
            if sub.startswith("self_attn.") and sub.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                layers.setdefault((i, parts[-1]), shape)
                continue
            sub = (sub.replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                   .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
                   .replace("self_attn.out_proj", "attn.out_proj"))
            out[p + sub] = shape
    for (i, kind), shape in layers.items():
        out[prefix + "transformer.resblocks.%d.attn.in_proj_%s" % (i, kind)] = [3 * shape[0]] + shape[1:]
    return out



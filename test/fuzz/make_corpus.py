#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses (test/fuzz/corpus/<name>/):
small valid files of every format each loader reads, plus a few near-misses.
Run once; the files are committed. Needs Pillow (any virtualenv)."""
import gzip, io, json, os, struct, zlib
from PIL import Image

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def put(name, fname, data):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)

# safetensors: header length (u64 le) + JSON + data
def st(tensors, meta=None):
    hdr, blob = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if meta is not None:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode()
    return struct.pack("<Q", len(h)) + h + blob

unet = {"in_channels": 1, "out_channels": 1, "image_size": 8, "base_channels": 8, "mult": [1, 2],
        "num_res_blocks": 1, "attn_res": [], "heads": 1, "norm_groups": 4, "dropout": 0, "num_classes": 2}
meta = {"cld.format": "cldiffusion-model 1", "cld.unet": json.dumps(unet),
        "cld.diffusion": json.dumps({"schedule": "cosine", "T": 1000, "prediction": "v"}),
        "cld.classes": json.dumps(["a", "b"])}
f32 = struct.pack("<6f", *range(6))
put("safetensors", "f32.safetensors", st({"w": ("F32", [2, 3], f32)}, meta))
put("safetensors", "mixed.safetensors", st({"a": ("F16", [4], b"\0<" * 4), "b": ("BF16", [2, 2], b"\x80?" * 4),
                                              "c": ("F32", [1], b"\0\0\x80?")}, {"k": "v"}))
put("safetensors", "empty.safetensors", st({}, {}))
put("safetensors", "hole.safetensors", st({"w": ("F32", [2], f32[:8])})[:-4])
put("config", "unet.json", json.dumps(unet).encode())
put("config", "meta.json", json.dumps(meta).encode())
put("config", "recipe.json", json.dumps({"model": "asset:fashion-mnist.safetensors", "model_hash": "0123456789abcdef",
    "sampler": "dpm++2m", "spacing": "trailing", "steps": 20, "eta": 0, "seed": 7, "index": 3, "class": 2,
    "guidance": 2.0, "engine": "cldiffusion 0.1.0"}).encode())
# the diffusers readers: the committed fixtures' config.json and scheduler_config.json
fx = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "diffusers")
for d in sorted(os.listdir(fx)):
    for f, name in (("config.json", "diffusers"), ("scheduler_config.json", "scheduler")):
        if os.path.exists(os.path.join(fx, d, f)):
            put("config", f"{name}-{d}.json", open(os.path.join(fx, d, f), "rb").read())

# IDX: magic 0x0000 08 ndim, big-endian dims, bytes; the fuzz input is
# [cut u16 le][images][labels]
def idx(ndim, dims, data):
    return struct.pack(">BBBB", 0, 0, 8, ndim) + b"".join(struct.pack(">I", d) for d in dims) + data
imgs = idx(3, [3, 4, 5], bytes(range(60)))
labs = idx(1, [3], bytes([0, 1, 2]))
for fname, a, b in [("raw", imgs, labs), ("gz", gzip.compress(imgs), gzip.compress(labs)),
                    ("mismatch", imgs, idx(1, [2], bytes([0, 1])))]:
    put("idx", fname, struct.pack("<H", len(a)) + a + b)

# images: every accepted format, grey and colour, 8 and 16 bits
im = Image.new("RGB", (7, 5))
for y in range(5):
    for x in range(7):
        im.putpixel((x, y), (x * 36, y * 60, (x * y * 20) % 256))
for fmt, ext, mode in [("PNG", "png", "RGB"), ("PNG", "png", "L"), ("PNG", "png", "RGBA"), ("JPEG", "jpg", "RGB"),
                       ("JPEG", "jpg", "L"), ("BMP", "bmp", "RGB"), ("TGA", "tga", "RGB"), ("PPM", "ppm", "RGB"),
                       ("PPM", "pgm", "L")]:
    b = io.BytesIO()
    im.convert(mode).save(b, fmt)
    put("image", "%s-%s.%s" % (fmt.lower(), mode.lower(), ext), b.getvalue())
b = io.BytesIO()
Image.new("I;16", (3, 2), 40000).save(b, "PNG")
put("image", "png16.png", b.getvalue())
# a PNG with a cld.recipe text chunk
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 0, 0, 0, 0)) +
       chunk(b"tEXt", b"cld.recipe\0{\"steps\": 20}") + chunk(b"IDAT", zlib.compress(b"\0\x10\x20")) +
       chunk(b"IEND", b""))
put("image", "text.png", png)
# a 65535 x 65535 header: refused before decoding
put("image", "bomb.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 65535, 65535, 8, 2, 0, 0, 0)))
# the JPEG as Pillow's libjpeg decodes it: test_image compares ours with it
Image.open(os.path.join(root, "image", "jpeg-rgb.jpg")).convert("RGB").save(
    os.path.join(root, "image", "jpeg-rgb-decoded.png"))

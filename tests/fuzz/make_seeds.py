#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus (tests/fuzz/corpus/<target>/), small valid inputs of each
format, without torch: the .pth seeds are torch.save's zip layout written by hand. Run it again
after changing a format; the files are committed."""
import json
import os
import struct
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

RECON_SMALL = {
    "camera_head": {"dim_in": 256, "iterations": 4, "mlp_ratio": 2.0, "num_heads": 4, "trunk_depth": 1},
    "depth": 6,
    "dino": {"depth": 3, "embed_dim": 128, "interpolate_antialias": True, "interpolate_offset": 0.0,
             "mlp_ratio": 4.0, "num_heads": 2, "num_register_tokens": 4},
    "dpt": {"dim_in": 256, "features": 48, "intermediate_layer_idx": [1, 2, 4, 5], "out_channels": [32, 48, 96, 96]},
    "embed_dim": 128, "img_size": 224, "mlp_ratio": 4.0, "num_heads": 2, "num_register_tokens": 4,
    "patch_size": 14, "rope_frequency": 100.0,
}


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(payload)]}
        blob += payload
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob


# ---- a torch.save archive: data.pkl (pickle protocol 2) + one file per storage ------------------
def unicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def integer(v):
    return b"J" + struct.pack("<i", v)


def tensor_pickle(entries, wrap=None):
    """entries: (name, storage type, storage key, numel, sizes, strides)."""
    out = b"\x80\x02"
    if wrap:
        out += b"}(" + unicode(wrap)
    out += b"}("
    for name, storage, key, numel, sizes, strides in entries:
        out += unicode(name) + b"ctorch._utils\n_rebuild_tensor_v2\n("
        out += b"(" + unicode("storage") + b"ctorch\n" + storage.encode() + b"\n" + unicode(key) + unicode("cpu") + integer(numel) + b"tQ"
        out += integer(0) + b"(" + b"".join(integer(s) for s in sizes) + b"t"
        out += b"(" + b"".join(integer(s) for s in strides) + b"t"
        out += b"\x89ccollections\nOrderedDict\n)RtR"
    out += b"u"
    if wrap:
        out += b"u"
    return out + b"."


def torch_save(entries, storages, wrap=None):
    import io
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", tensor_pickle(entries, wrap))
        z.writestr("archive/byteorder", "little")
        for key, payload in storages.items():
            z.writestr("archive/data/" + key, payload)
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


def main():
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)
    write("safetensors", "two_tensors", safetensors([("a.weight", "F32", [2, 2], f32), ("a.bias", "F16", [2], b"\x00\x3c\x00\xc0")]))
    write("safetensors", "with_config", safetensors([("x", "BF16", [1], b"\x80\x3f")],
                                                    {"config": json.dumps(RECON_SMALL), "step": "1"}))
    write("safetensors", "empty_tensor", safetensors([("e", "I64", [0, 3], b"")]))

    write("pth", "flat", torch_save([("w", "FloatStorage", "0", 4, [2, 2], [2, 1]), ("b", "FloatStorage", "1", 2, [2], [1])],
                                    {"0": f32, "1": f32[:8]}))
    write("pth", "wrapped", torch_save([("layer.w", "HalfStorage", "0", 2, [2], [1])], {"0": b"\x00\x3c\x00\xc0"}, wrap="model"))

    write("config", "recon_small.json", json.dumps(RECON_SMALL, indent=1))
    tiny = json.loads(json.dumps(RECON_SMALL))
    tiny.update({"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 56})
    tiny["dpt"]["intermediate_layer_idx"] = [0, 1, 1, 1]
    write("config", "small_variant.json", json.dumps(tiny))

    # fuzz_dataset_text: the first byte picks the reader (0 list, 1 trajectory, 2 matrix,
    # 3 intrinsics, 4 focal, 5 poses.txt).
    write("dataset_text", "rgb_list", b"\x00# timestamp filename\n1305031102.175304 rgb/1305031102.175304.png\n1305031102.211214 rgb/1305031102.211214.png\n")
    write("dataset_text", "trajectory", b"\x01# ground truth\n1305031098.6659 1.3563 0.6305 1.6380 0.6132 0.5962 -0.3311 -0.3986\n1305031098.6758 1.3543 0.6326 1.6360 0.6129 0.5974 -0.3309 -0.3975\n")
    write("dataset_text", "matrix", b"\x02 9.9e-01 1.0e-02 -2.0e-02 1.5e-01\n-1.0e-02 1.0e+00 3.0e-03 -2.0e-01\n2.0e-02 -3.0e-03 9.9e-01 1.1e+00\n0 0 0 1\n")
    write("dataset_text", "intrinsics", b"\x03585 0 320\n0 585 240\n0 0 1\n")
    write("dataset_text", "focal", b"\x04 585.0\n")
    write("dataset_text", "poses", b"\x05" + b"1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n" * 2)

    for i, text in enumerate(["2GB", "512MiB", "1.5 GB", "0", "18446744073709551615", "518x392", "518", "224x168"]):
        write("sizes", "seed%d" % i, text)


if __name__ == "__main__":
    main()

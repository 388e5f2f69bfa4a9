#!/usr/bin/env python3
"""Writes the seed corpus for safetensors_fuzz (tests/fuzz/corpus/safetensors/):
a handful of tiny valid files and one of each kind of invalid file. Standard
library only; run it from anywhere. Output is deterministic."""

import json
import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "safetensors"

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
         "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
         "F8_E4M3": 1, "F8_E5M2": 1}


def image(header, data=b"", pad=True, length=None):
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def tensors(specs):
    """specs: [(name, dtype, shape)] -> (header dict, data) laid out contiguously."""
    header, data = {}, b""
    for name, dtype, shape in specs:
        count = 1
        for d in shape:
            count *= d
        size = count * SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + size]}
        data += bytes((len(data) + i) * 37 % 256 for i in range(size))
    return header, data


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    seeds = {}

    h, d = tensors([(f"t_{k.lower()}", k, [2]) for k in SIZES])
    seeds["valid_all_dtypes"] = image(h, d)

    h, d = tensors([("lora_unet_x.lora_down.weight", "F16", [2, 3]),
                    ("lora_unet_x.lora_up.weight", "F16", [3, 2]),
                    ("lora_unet_x.alpha", "F32", [])])
    h = {"__metadata__": {"ss_network_dim": "2", "ss_network_alpha": "1.0",
                          "modelspec.title": "caf\u00e9 \U0001F600"}, **h}
    seeds["valid_kohya_metadata"] = image(h, d)

    h, d = tensors([("empty", "F32", [0, 4]), ("x", "BF16", [1]), ("z", "I64", [3, 0])])
    seeds["valid_empty_tensors"] = image(h, d)
    seeds["valid_no_tensors"] = image({})
    seeds["valid_unpadded_escapes"] = image(
        {"a\\\"\u00e9\u0001": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}},
        b"\x07", pad=False)

    h, d = tensors([("a", "F32", [2]), ("b", "F32", [2])])
    h["b"]["data_offsets"] = [4, 12]
    seeds["bad_overlap"] = image(h, d[:12])
    h, d = tensors([("a", "F32", [2]), ("b", "F32", [2])])
    h["b"]["data_offsets"] = [12, 20]
    seeds["bad_gap"] = image(h, d + b"\0" * 4)
    h, d = tensors([("a", "F64", [2])])
    seeds["bad_trailing"] = image(h, d + b"xyz")
    seeds["bad_truncated"] = image(h, d[:-1])
    seeds["bad_size_mismatch"] = image(
        {"x": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 100]}}, bytes(100))
    seeds["bad_dtype"] = image({"x": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}},
                               b"\0")
    seeds["bad_metadata"] = image({"__metadata__": {"epochs": 10}})
    seeds["bad_json"] = struct.pack("<Q", 16) + b'{"a":{"dtype":[1'
    seeds["bad_length"] = struct.pack("<Q", 1 << 40) + b"{}"
    seeds["bad_duplicate"] = struct.pack("<Q", 16) + b'{"a":{},"a":{}} '
    seeds["bad_shape_overflow"] = image(
        {"x": {"dtype": "F32", "shape": [1 << 62, 4], "data_offsets": [0, 0]}})
    seeds["bad_leading_space"] = struct.pack("<Q", 8) + b"  {}    "
    seeds["bad_deep_nesting"] = struct.pack("<Q", 130) + b"[" * 130

    for old in OUT.iterdir():
        old.unlink()
    for name, content in seeds.items():
        (OUT / name).write_bytes(content)
    print(f"{len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes in {OUT}")


if __name__ == "__main__":
    main()

"""Writes python_reference.safetensors with the reference implementation
(pip install safetensors numpy), so the C++ reader is tested against a file
it did not write. Values: element i of every tensor is f(i) as documented in
test_safetensors_reader.cpp (ReferenceFile tests)."""

import numpy as np
from safetensors.numpy import save_file

tensors = {}
n = 6
for name, dtype in [
    ("u8", np.uint8),
    ("i8", np.int8),
    ("i16", np.int16),
    ("u16", np.uint16),
    ("i32", np.int32),
    ("u32", np.uint32),
    ("i64", np.int64),
    ("u64", np.uint64),
    ("f16", np.float16),
    ("f32", np.float32),
    ("f64", np.float64),
]:
    values = np.arange(n, dtype=np.float64) * 1.5 - 2.0  # -2.0, -0.5, 1.0, 2.5, 4.0, 5.5
    if np.issubdtype(dtype, np.integer):
        values = np.arange(n) * 3 + (0 if name.startswith("u") else -7)
    tensors[name] = values.astype(dtype).reshape(2, 3)
tensors["bool"] = np.array([True, False, True, True], dtype=np.bool_)
tensors["empty"] = np.zeros((0, 4), dtype=np.float32)
tensors["scalar"] = np.array(3.25, dtype=np.float32)

save_file(tensors, "python_reference.safetensors",
          metadata={"format": "pt", "ss_network_dim": "16", "note": "caf\u00e9 \u2713"})

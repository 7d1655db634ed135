import time, json
import numpy as np
from constitutional_guard.classifiers.lm_states import StateReader, StatesSettings
from constitutional_guard.data.corpus import load_split
from constitutional_guard.data.sources.categories import *  # noqa
from constitutional_guard.paths import cache_dir
from constitutional_guard.classifiers.calibration import record_prompt
recs = [r for r in load_split(cache_dir()/"demo"/"corpus", "test") if r.response is None][:64]
items = [(record_prompt(r), None) for r in recs]
ex = [r for r in load_split(cache_dir()/"demo"/"corpus", "test") if r.response is not None][:32]
exitems = [(record_prompt(r), r.response) for r in ex]
out = {}
for dtype in ("float32", "bfloat16"):
    rd = StateReader.load(StatesSettings(model="smollm2-135m-instruct", layers=(18,), dtype=dtype))
    rd.encode(items[:4])
    t = time.perf_counter(); a = rd.encode(items); tp = time.perf_counter() - t
    t = time.perf_counter(); b = rd.encode(exitems); te = time.perf_counter() - t
    out[dtype] = (tp / len(items) * 1000, te / len(exitems) * 1000)
    np.save(f"/tmp/s19/st_{dtype}.npy", a)
    print(dtype, "ms/prompt %.1f ms/exchange %.1f" % out[dtype], flush=True)
a, b = np.load("/tmp/s19/st_float32.npy"), np.load("/tmp/s19/st_bfloat16.npy")
cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
print("cosine min %.5f mean %.5f" % (cos.min(), cos.mean()))

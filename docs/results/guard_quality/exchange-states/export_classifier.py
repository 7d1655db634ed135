"""Train the demo's exchange classifier alone (its current settings) and write what ships, leaving the input check."""
import sys
from pathlib import Path

from constitutional_guard import demo
from constitutional_guard.paths import cache_dir

work, out = Path(sys.argv[1]), Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
corpus = cache_dir() / "demo" / "corpus"
demo.ensure_classifier(work, corpus, demo.DemoSettings(), lambda m: print(m, flush=True), export=out)

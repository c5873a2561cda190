#!/usr/bin/env python3
# Run from the project root after `dvc repro`: python bench/model_identity.py [OLD_REV [NEW_KEY ...]]
"""Is data/model byte-identical to the old lock's, except training_params.json's new keys? Rebuild DVC's .dir
hash of data/model with training_params.json written without the keys added since OLD_REV (default: 8e937c9
and the two keys added after it, keep_best and resume_other_code)."""
import hashlib, json, subprocess, sys
from pathlib import Path
import yaml
NEW_KEYS = sys.argv[2:] or ("keep_best", "resume_other_code")
root = Path("data/model")
entries = []
for f in sorted(p for p in root.rglob("*") if p.is_file()):
    data = f.read_bytes()
    if f.name == "training_params.json":
        obj = json.loads(data)
        for k in NEW_KEYS:
            obj.pop(k)
        data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    entries.append({"md5": hashlib.md5(data).hexdigest(), "relpath": f.relative_to(root).as_posix()})
entries.sort(key=lambda e: e["relpath"])
rebuilt = hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"
old = yaml.safe_load(subprocess.run(["git", "show", f"{sys.argv[1] if len(sys.argv) > 1 else '8e937c9'}:dvc.lock"], capture_output=True, text=True).stdout)
old_md5 = [o["md5"] for o in old["stages"]["pretrain"]["outs"] if o["path"] == "data/model"][0]
now = yaml.safe_load(open("dvc.lock"))
now_md5 = [o["md5"] for o in now["stages"]["pretrain"]["outs"] if o["path"] == "data/model"][0]
print("old lock data/model:", old_md5, "| this run:", now_md5, "| rebuilt without the new keys:", rebuilt,
      "| SAME" if rebuilt == old_md5 else "| DIFFERENT")

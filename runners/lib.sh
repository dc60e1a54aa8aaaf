# Shared by the submit scripts: read Terraform outputs, render ${VAR} templates, run or print.
# Needs only bash and python3 (standard library).

# tf_output FILE NAME: one value of `terraform output -json` (fails if missing or empty).
tf_output() {
  python3 - "$1" "$2" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as handle:
    outputs = json.load(handle)
value = outputs.get(name, {}).get("value") if isinstance(outputs.get(name), dict) else outputs.get(name)
if value in (None, ""):
    sys.exit(f"{path}: terraform output {name!r} is missing or empty")
print(value)
PY
}

# render FILE: FILE with every ${VAR} replaced from the environment; fails on any left unset.
render() {
  python3 - "$1" <<'PY'
import os, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
missing = sorted({name for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text) if not os.environ.get(name)})
if missing:
    sys.exit(f"{sys.argv[1]}: set {', '.join(missing)}")
sys.stdout.write(re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", lambda m: os.environ[m.group(1)], text))
PY
}

# run CMD...: run it, or print it (shell-quoted) when DRY_RUN=1.
run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

#!/usr/bin/env bash
# Fuzz every cargo-fuzz target in fuzz/ briefly (HUM_FUZZ_SECONDS each, default 20), starting
# from the checked-in seeds. Any crash, panic or failed assertion fails this stage; so does a
# toolchain that cannot build the targets (no silent skipping).
#
# cargo-fuzz passes nightly-only flags to rustc; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. We fuzz without a sanitizer: the code under test is safe Rust (unsafe_code is
# denied), so libFuzzer's coverage guidance plus Rust's own checks are what matter, and it
# avoids needing a nightly sanitizer runtime.
source "$(dirname "$0")/../lib.sh"
ensure_rust
ensure_cargo_tool cargo-fuzz cargo-fuzz@0.13.2

secs="${HUM_FUZZ_SECONDS:-20}"
cd "$HUM_ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-$HUM_ROOT/fuzz/target}/fuzz"

mapfile -t targets < <(cargo fuzz list)
[ "${#targets[@]}" -gt 0 ] || die "cargo fuzz list found no fuzz targets in fuzz/"

step "building ${#targets[@]} fuzz target(s): ${targets[*]}"
cargo fuzz build --sanitizer none --target-dir "$target_dir" >&2

for t in "${targets[@]}"; do
  step "fuzzing $t for ${secs}s"
  corpus="$HUM_ROOT/fuzz/corpus/$t"
  mkdir -p "$corpus"
  dirs=("$corpus")
  [ -d "$HUM_ROOT/fuzz/seeds/$t" ] && dirs+=("$HUM_ROOT/fuzz/seeds/$t")
  log="$(mktemp)"
  status=0
  cargo fuzz run --sanitizer none --target-dir "$target_dir" "$t" "${dirs[@]}" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    die "fuzz target $t failed (exit $status); the reproducer is in fuzz/artifacts/$t/"
  fi
  note "$(grep -E '^Done [0-9]+ runs' "$log" || echo "no run count in the log")"
  rm -f "$log"
done
step "fuzzing passed"

# Shared by the recording fakes of imgadm, vmadm, zfs and sdc-sapi used by the
# restore tests. Environment:
#   FAKE_SMARTOS_STATE  directory holding the fake system's state (required):
#                       images/<uuid>, vms/<uuid>.json, vms/<uuid>.state,
#                       zones/<uuid>/data (the delegate dataset mountpoint),
#                       calls.log (one line per call: the argv, tab-separated),
#                       mutations (count of state-changing calls so far)
#   FAKE_SMARTOS_FAIL_AT  fail the N-th state-changing call (1-based) with exit 1
#   FAKE_SMARTOS_FAIL_MATCH  fail every call whose argv line contains this text
set -euo pipefail
: "${FAKE_SMARTOS_STATE:?FAKE_SMARTOS_STATE must be set}"
mkdir -p "$FAKE_SMARTOS_STATE/images" "$FAKE_SMARTOS_STATE/vms" "$FAKE_SMARTOS_STATE/zones"

fake_name=$(basename "$0")
fake_line="$fake_name"
for a in "$@"; do fake_line+=$'\t'"$a"; done
printf '%s\n' "$fake_line" >>"$FAKE_SMARTOS_STATE/calls.log"

fake_check_match() {
  if [[ -n "${FAKE_SMARTOS_FAIL_MATCH:-}" && "$fake_line" == *"$FAKE_SMARTOS_FAIL_MATCH"* ]]; then
    echo "$fake_name: injected failure (match '$FAKE_SMARTOS_FAIL_MATCH')" >&2
    exit 1
  fi
}

# Call before changing state: counts the mutation and fails when told to.
fake_mutation() {
  local n=0
  [[ -f "$FAKE_SMARTOS_STATE/mutations" ]] && n=$(cat "$FAKE_SMARTOS_STATE/mutations")
  n=$((n + 1))
  echo "$n" >"$FAKE_SMARTOS_STATE/mutations"
  if [[ -n "${FAKE_SMARTOS_FAIL_AT:-}" && "$n" == "$FAKE_SMARTOS_FAIL_AT" ]]; then
    echo "$fake_name: injected failure at state-changing call $n" >&2
    exit 1
  fi
}

fake_check_match

# Prints a `curl -i` style answer: status line, a header, blank line, body.
fake_answer() {  # status text body
  printf 'HTTP/1.1 %s %s\r\nContent-Type: application/json\r\n\r\n%s\n' "$1" "$2" "$3"
}

# Runs fake_triton.py with the arguments and prints its "status<TAB>body"
# answer as fake_answer does.
fake_triton() {
  local out status body text
  out=$(python3 "$(dirname "$0")/fake_triton.py" "$@")
  status=${out%%$'\t'*}
  body=${out#*$'\t'}
  case "$status" in
    200) text=OK ;; 202) text=Accepted ;; 204) text="No Content" ;; 404) text="Not Found" ;;
    409) text=Conflict ;; 422) text="Unprocessable Entity" ;; 500) text="Internal Server Error" ;;
    *) text=Status ;;
  esac
  fake_answer "$status" "$text" "$body"
}

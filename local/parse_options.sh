# Sourced by staged scripts (prepare.sh, run.sh), icefall/kaldi style: every "--some-name VALUE"
# or "--some-name=VALUE" argument sets the shell variable some_name, which the script must have
# defined before sourcing this file (so typos are errors, not silently new variables).
# "--help" prints the script's leading comment block and the current values of its options.
# Positional arguments are left in "$@".

_po_help() {
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
    echo
    echo "Options (current values):"
    local name
    for name in "${_po_names[@]}"; do
        printf '  --%s %s\n' "${name//_/-}" "${!name}"
    done
}

# The script's option names: the variables assigned at the top level before the source line.
mapfile -t _po_names < <(sed -n '/parse_options.sh/q;s/^\([a-z_][a-z0-9_]*\)=.*/\1/p' "$0")

_po_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            _po_help
            exit 0
            ;;
        --*=*)
            _po_name="${1%%=*}"; _po_value="${1#*=}"; shift
            ;;
        --*)
            _po_name="$1"
            if [ $# -lt 2 ]; then
                echo "$0: option $1 needs a value" >&2
                exit 1
            fi
            _po_value="$2"; shift 2
            ;;
        *)
            _po_args+=("$1"); shift
            continue
            ;;
    esac
    _po_var="${_po_name#--}"; _po_var="${_po_var//-/_}"
    _po_known=0
    for _po_n in "${_po_names[@]}"; do
        [ "$_po_n" = "$_po_var" ] && _po_known=1
    done
    if [ "$_po_known" != 1 ]; then
        echo "$0: unknown option $_po_name (see $0 --help)" >&2
        exit 1
    fi
    printf -v "$_po_var" '%s' "$_po_value"
done
set -- "${_po_args[@]+"${_po_args[@]}"}"
unset _po_name _po_value _po_var _po_known _po_n _po_args

"""Report writing shared by the benchmark scripts (tools/bench-*.sh)."""
import os

NOTES_MARKER = "<!-- notes: kept across runs -->"


def write_report(md, out, write):
    """Prints the markdown report and, when `write`, writes it to `out`,
    keeping the notes section (from NOTES_MARKER on) of the file it replaces."""
    print()
    print(md)
    if not write:
        return
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    notes = ""
    if os.path.exists(out):
        old = open(out).read()
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    with open(out, "w") as f:
        f.write(md)
        if notes:
            f.write("\n" + notes)
    print(f"wrote {out}")

"""A plain module mounted as a sub by tests/test_refs.c."""

def which():
    return "b"

#!/usr/bin/env python3
"""Every integration test method is a ctest entry: a `def test_...` in a
*_test.py under tests/integration that no lifeboat_python_tests() call names
would never run. Exits 1 naming each one."""
import glob
import os
import re
import sys

here = os.path.dirname(os.path.abspath(__file__))
listed = set()
for cmake in glob.glob(os.path.join(here, "**", "CMakeLists.txt"), recursive=True):
    with open(cmake) as f:
        listed |= set(re.findall(r"\b(test_\w+)", f.read()))
missing = []
for script in sorted(glob.glob(os.path.join(here, "**", "*_test.py"), recursive=True)):
    with open(script) as f:
        for name in re.findall(r"^\s+def (test_\w+)\(", f.read(), re.M):
            if name not in listed:
                missing.append("%s: %s" % (os.path.relpath(script, here), name))
for m in missing:
    print("not registered in CMakeLists.txt (never runs): " + m)
sys.exit(1 if missing else 0)

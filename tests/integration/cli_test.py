#!/usr/bin/env python3
"""The command line as scripts and people meet it: typos get "did you mean",
every subcommand's --help lists the shared options, usage errors exit 64.

  cli_test.py --lifeboat build/lifeboat [unittest args]
"""

import argparse
import os
import subprocess
import sys
import unittest

LIFEBOAT = None


def run(*args):
    return subprocess.run([LIFEBOAT, *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


class CliTest(unittest.TestCase):
    def test_typos_get_the_closest_name_and_exit_64(self):
        cases = [
            (["statsu"], "unknown command 'statsu' (did you mean 'status'?)", "lifeboat --help"),
            (["status", "--chekc"], "unknown option '--chekc' (did you mean '--check'?)",
             "lifeboat status --help"),
            (["catalog", "verfy"], "unknown command 'verfy' (did you mean 'verify'?)",
             "lifeboat catalog --help"),
            (["restore", "--dryrun"], "unknown option '--dryrun' (did you mean '--dry-run'?)",
             "lifeboat restore --help"),
            (["readiness", "--jsno"], "unknown option '--jsno' (did you mean '--json'?)",
             "lifeboat readiness --help"),
        ]
        for args, message, hint in cases:
            r = run(*args, "-c", "/nonexistent.toml")
            self.assertEqual(r.returncode, 64, args)
            self.assertIn(message, r.stderr, args)
            self.assertIn(hint, r.stderr, args)
        r = run("status", "surplus", "-c", "/nonexistent.toml")
        self.assertEqual(r.returncode, 64)
        self.assertIn("unknown argument 'surplus'", r.stderr)
        self.assertNotIn("did you mean", r.stderr)

    def test_every_subcommand_help_lists_the_shared_options(self):
        for args in (["status"], ["sync-now"], ["readiness"], ["drill"], ["restore"],
                     ["catalog", "ls"], ["catalog", "verify"], ["check-config"], ["agent"]):
            r = run(*args, "--help")
            self.assertEqual(r.returncode, 0, args)
            self.assertIn("-c,--config FILE", r.stdout, args)
            self.assertIn("-j,--json", r.stdout, args)


def main():
    global LIFEBOAT
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifeboat", required=True)
    args, rest = ap.parse_known_args()
    LIFEBOAT = os.path.abspath(args.lifeboat)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()

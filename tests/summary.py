"""The plain closing line of `make test`: adds up what each runner said it passed and failed.

Reads the logs `make test` tee'd: Swift Testing ("Test run with N tests ... passed|failed"),
XCTest ("Executed N tests, with F failures"), pytest ("N passed, F failed") and the API
runner ("api: N passed, F failed"). Prints `tests: N passed, F failed`; exits 1 when a
runner failed or nothing ran at all.
"""
import re
import sys

passed = failed = 0
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8", errors="replace").read()
    swift = re.findall(r"Test run with (\d+) tests? (?:in \d+ suites? )?(passed|failed)(?: after [\d.]+ seconds with (\d+) issues?)?", text)
    for n, outcome, issues in swift[-1:]:
        if outcome == "passed":
            passed += int(n)
        else:
            failed += max(int(issues or 1), 1)
            passed += max(int(n) - int(issues or 1), 0)
    for n, f in re.findall(r"Executed (\d+) tests?, with (\d+) failures?", text)[-1:]:
        if int(n):
            passed += int(n) - int(f)
            failed += int(f)
    for line in re.findall(r"^=+ (.*) in [\d.]+s.*=+$", text, re.M)[-1:]:
        m = re.search(r"(\d+) passed", line)
        passed += int(m.group(1)) if m else 0
        m = re.search(r"(\d+) (?:failed|error)", line)
        failed += int(m.group(1)) if m else 0
    for n, f in re.findall(r"^api: (\d+) passed, (\d+) failed$", text, re.M)[-1:]:
        passed += int(n)
        failed += int(f)

print(f"tests: {passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)

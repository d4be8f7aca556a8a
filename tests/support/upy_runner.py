# Runs one test function of a tests/upy module on the MicroPython unix port.
# usage: micropython upy_runner.py <module> <function>
import sys

_PASS = "UPY-TEST-PASSED"


def _main():
    module_name = sys.argv[1]
    test_name = sys.argv[2]
    # The runner's own directory must not shadow anything.
    if sys.path and sys.path[0].endswith("support"):
        sys.path.pop(0)
    module = __import__(module_name)
    func = getattr(module, test_name)
    try:
        func()
    except Exception as exc:
        sys.print_exception(exc)
        sys.exit(1)
    print(_PASS)


_main()

"""The threaded workload of `./dev valgrind`: four threads under Ocular at
threshold 0, writing a .pftrace, in both modes."""

import os
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import ocular  # noqa: E402
import workloads  # noqa: E402


def main():
    with tempfile.TemporaryDirectory() as directory:
        for mode in ("adaptive", "precise"):
            ocular.start_tracing(mode=mode, deinstrument_threshold=0,
                                 output=os.path.join(directory, f"threads-{mode}.pftrace"))
            threads = [threading.Thread(target=workloads.mixed_no_genexpr, name=f"worker-{i}") for i in range(4)]
            for thread in threads:
                thread.start()
            workloads.balanced_workload()
            for thread in threads:
                thread.join()
            profile = ocular.stop_tracing()
            assert profile.failure is None and len(profile.threads) == 5, profile.threads
            print(f"{mode}: {profile.events:,} events on {len(profile.threads)} threads")


if __name__ == "__main__":
    main()

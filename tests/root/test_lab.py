import os
import subprocess
import sys


def test_lab_hosts_talk_and_vanish(lab):
    a = lab.add_host("a")
    b = lab.add_host("b")
    lab.link(a, b, "10.9.0.1/24", "10.9.0.2/24")
    assert a.inode != b.inode != os.stat("/proc/self/ns/net").st_ino
    out = a.run(["ping", "-c1", "-W2", "10.9.0.2"], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    path = a.netns
    lab.close()
    assert not os.path.exists(path)


def test_lab_dies_with_its_process():
    # A child python builds a lab and is SIGKILLed: its namespaces must go.
    code = (
        "from ipdbg.lab import Lab; import os, sys, time\n"
        "lab = Lab(); h = lab.add_host('x'); print(h.pid, flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    pid = int(p.stdout.readline())
    assert os.path.exists(f"/proc/{pid}")
    p.kill()
    p.wait()
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            break
        import time; time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}")

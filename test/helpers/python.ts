import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

// Debian's python3-socks installs into the system Python, so use that interpreter by its path.
export const PYTHON = '/usr/bin/python3';

export interface PythonResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a Python script with PySocks available, asynchronously (a proxy under test may run in this
 * very process). A missing module or interpreter is reported with the install command.
 */
export function runPySocks(script: string, args: string[] = [], timeoutMs = 15_000): Promise<PythonResult> {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing; install it with: apt-get install -y python3-socks`);
  return new Promise((resolve) => {
    const child = spawn(PYTHON, ['-c', script, ...args], { timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (code) => {
      if (/No module named 'socks'/.test(stderr)) stderr += '\ninstall it with: apt-get install -y python3-socks';
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

// PySocks opens the control connection on the first sendto and declares DST "0" with its UDP port.
/** PySocks UDP through a proxy: echo round trips up to 60000 bytes, a name (echo.test) the proxy resolves, a DNS query. */
export const PYSOCKS_UDP_ECHO = `
import socket, sys, socks, binascii
proxy_port, echo_port, dns_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port)
s.settimeout(5)
ok = 0
for size in (0, 1, 100, 1400, 8000, 60000):
    data = bytes((i * 31 + size) % 256 for i in range(size))
    s.sendto(data, ("127.0.0.1", echo_port))
    got, source = s.recvfrom(65535)
    assert got == data and source == ("127.0.0.1", echo_port), (size, len(got), source)
    ok += 1
s.sendto(b"by name", ("echo.test", echo_port))
got, source = s.recvfrom(65535)
assert got == b"by name", got
s.sendto(binascii.unhexlify(sys.argv[4]), ("127.0.0.1", dns_port))
answer, source = s.recvfrom(65535)
print("OK", ok, source[1], binascii.hexlify(answer).decode())
`;

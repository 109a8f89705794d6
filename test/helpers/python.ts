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

// A real nginx (Debian's, installed by scripts/setup.sh) as the load balancer in front of several instances:
// deploy/nginx.conf.template, the one operators run through scripts/lb, on a free loopback port, stopped by PID.
import { spawn, ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './redis';

const TEMPLATE = path.resolve(__dirname, '../../deploy/nginx.conf.template');
const BINARY = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p)) ?? 'nginx';

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

export class Nginx {
  private child?: ChildProcess;
  readonly dir = mkdtempSync(path.join(tmpdir(), 'cartwheel-nginx-'));

  private constructor(readonly port: number) {}

  /** Round robin over `instances` (`host:port` each). */
  static async start(instances: string[]): Promise<Nginx> {
    const nginx = new Nginx(await freePort());
    const conf = readFileSync(TEMPLATE, 'utf8')
      .replaceAll('@PREFIX@', nginx.dir)
      .replaceAll('@LISTEN@', `127.0.0.1:${nginx.port}`)
      .replaceAll('@UPSTREAMS@', instances.map((i) => `server ${i};`).join(' '));
    const file = path.join(nginx.dir, 'nginx.conf');
    writeFileSync(file, conf);
    nginx.child = spawn(BINARY, ['-p', nginx.dir, '-c', file], { stdio: ['ignore', 'ignore', 'inherit'] });
    const deadline = Date.now() + 10_000;
    while (!(await accepts(nginx.port))) {
      if (Date.now() > deadline || nginx.child.exitCode !== null) throw new Error('nginx did not start');
      await new Promise((r) => setTimeout(r, 20));
    }
    return nginx;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async dispose(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null) {
      await new Promise<void>((resolve) => { child.once('exit', () => resolve()); child.kill('SIGTERM'); });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

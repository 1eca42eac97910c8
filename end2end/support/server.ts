// The real server binary (the release build by default), on a fresh temporary SQLite file, on a free port.
// `restart()` stops it and starts it again on the same port and database, as an operator's restart would.
import { spawn, ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';

const BIN = process.env.CARTWHEEL_SERVER_BIN ?? path.resolve(__dirname, '../../target/release/server');

export class ShopServer {
  private child?: ChildProcess;
  readonly dir = mkdtempSync(path.join(tmpdir(), 'cartwheel-e2e-'));
  url = '';

  constructor(private readonly args: string[] = []) {}

  /** Start on a free port; `args` are extra server flags (e.g. a shorter reconnect schedule). */
  static async start(args: string[] = []): Promise<ShopServer> {
    const server = new ShopServer(args);
    await server.launch('127.0.0.1:0');
    return server;
  }

  get port(): string {
    return new URL(this.url).port;
  }

  private launch(bind: string): Promise<void> {
    const flags = ['--bind', bind, '--database', path.join(this.dir, 'carts.sqlite3'), '--log', 'warn,server=info', ...this.args];
    const child = spawn(BIN, flags, {
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    return new Promise((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      const onExit = (code: number | null) => reject(new Error(`server exited early (${code})`));
      child.once('exit', onExit);
      lines.on('line', (line) => {
        const m = line.match(/serving on (http:\/\/\S+)/);
        if (m) {
          this.url = m[1];
          child.off('exit', onExit);
          resolve();
        }
      });
    });
  }

  /** Stop the process (SIGTERM: it closes every socket with 1001) and wait for it to exit. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  }

  /** Start again on the same address and database. */
  async restart(): Promise<void> {
    await this.launch(`127.0.0.1:${this.port}`);
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// The example help-chat service (examples/help-bot, release build), connected to a shop as a service.
import { spawn, ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';

const BIN = process.env.CARTWHEEL_BOT_BIN ?? path.resolve(__dirname, '../../target/release/help-bot');

export class HelpBot {
  private constructor(private readonly child: ChildProcess) {}

  /** Start it against `shop` with `token`; resolves once it is connected. */
  static start(shop: string, token: string): Promise<HelpBot> {
    const child = spawn(BIN, ['--shop', shop, '--token', token], { stdio: ['ignore', 'pipe', 'inherit'] });
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`help-bot exited early (${code})`));
      child.once('exit', onExit);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line.includes('connected to')) {
          child.off('exit', onExit);
          resolve(new HelpBot(child));
        }
      });
    });
  }

  /** SIGKILL, as a crash would: its connection drops without a goodbye. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      this.child.once('exit', () => resolve());
      this.child.kill('SIGKILL');
    });
  }
}

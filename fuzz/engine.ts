import { createHash } from 'node:crypto';
import { Session } from 'node:inspector';

/**
 * A small coverage-guided fuzzer: V8's precise block coverage (through the inspector) tells which
 * blocks of our code an input reached and about how often; inputs that reach something new join
 * the corpus and are mutated further. Findings are inputs that make a target throw.
 */

export interface FuzzTarget {
  readonly name: string;
  /** Files whose coverage guides this target (substrings of script URLs). */
  readonly cover: readonly string[];
  /** Throws (an AssertionError or anything unexpected) when the input reveals a bug. */
  run(input: Buffer): void;
}

export interface FuzzResult {
  readonly target: string;
  readonly executions: number;
  readonly features: number;
  readonly corpus: Buffer[];
  /** Inputs added to the corpus during this run. */
  readonly added: Buffer[];
  readonly findings: Array<{ input: Buffer; error: string }>;
}

interface Coverage {
  result: Array<{ url: string; functions: Array<{ ranges: Array<{ startOffset: number; endOffset: number; count: number }> }> }>;
}

function post<T>(session: Session, method: string, params?: object): T {
  let out: T | undefined;
  let failure: Error | null = null;
  // The inspector answers synchronously for these methods when connected in-process.
  session.post(method, params ?? {}, (error, result) => {
    if (error) failure = error;
    out = result as T;
  });
  if (failure) throw failure;
  return out as T;
}

const bucket = (count: number): number => (count <= 3 ? count : count <= 7 ? 4 : count <= 15 ? 5 : count <= 31 ? 6 : 7);

/** Deterministic pseudo-random numbers (xorshift), so a run can be repeated from its seed. */
class Random {
  constructor(private state: number) {
    if (this.state === 0) this.state = 0x9e3779b9;
  }
  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }
  below(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
}

const INTERESTING = [0, 1, 2, 3, 4, 5, 0x7f, 0x80, 0x81, 0xfe, 0xff, 16, 32, 64, 127, 255];

function mutate(input: Buffer, corpus: Buffer[], random: Random, maxLength: number): Buffer {
  let data = Buffer.from(input);
  const rounds = 1 + random.below(4);
  for (let r = 0; r < rounds; r++) {
    const at = random.below(data.length + 1);
    switch (random.below(9)) {
      case 0: // flip a bit
        if (data.length) data[at % data.length]! ^= 1 << random.below(8);
        break;
      case 1: // a random byte
        if (data.length) data[at % data.length] = random.below(256);
        break;
      case 2: // an interesting byte
        if (data.length) data[at % data.length] = INTERESTING[random.below(INTERESTING.length)]!;
        break;
      case 3: {
        // insert random bytes
        const extra = Buffer.alloc(1 + random.below(8));
        for (let i = 0; i < extra.length; i++) extra[i] = random.below(256);
        data = Buffer.concat([data.subarray(0, at), extra, data.subarray(at)]);
        break;
      }
      case 4: // delete a range
        data = Buffer.concat([data.subarray(0, at), data.subarray(Math.min(data.length, at + 1 + random.below(8)))]);
        break;
      case 5: {
        // duplicate a range
        const end = Math.min(data.length, at + 1 + random.below(16));
        data = Buffer.concat([data.subarray(0, end), data.subarray(at, end), data.subarray(end)]);
        break;
      }
      case 6: {
        // splice with another corpus entry
        const other = corpus[random.below(corpus.length)]!;
        data = Buffer.concat([data.subarray(0, at), other.subarray(random.below(other.length + 1))]);
        break;
      }
      case 7: // truncate
        data = data.subarray(0, at);
        break;
      default: {
        // overwrite with ASCII (helps text formats such as YAML and users files)
        const text = ['\n', ':', ' ', '-', '[', ']', '{', '}', '"', '#', '0', '9', '.', '/', 'a', '$'][random.below(16)]!;
        if (data.length) data[at % data.length] = text.charCodeAt(0);
        break;
      }
    }
  }
  return data.length > maxLength ? data.subarray(0, maxLength) : data;
}

/** Runs `target` for `seconds` (or `maxExecutions`), starting from `seeds`. */
export function fuzz(target: FuzzTarget, seeds: Buffer[], options: { seconds: number; maxExecutions?: number; seed?: number; maxLength?: number }): FuzzResult {
  const session = new Session();
  session.connect();
  post(session, 'Profiler.enable');
  post(session, 'Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  const seen = new Set<string>();
  const findings: Array<{ input: Buffer; error: string }> = [];
  const findingKeys = new Set<string>();
  const corpus: Buffer[] = [];
  const added: Buffer[] = [];
  const random = new Random(options.seed ?? Date.now());
  const maxLength = options.maxLength ?? 4096;

  const runOne = (input: Buffer): boolean => {
    post<Coverage>(session, 'Profiler.takePreciseCoverage');
    try {
      target.run(input);
    } catch (error) {
      const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      const key = text.split('\n')[0]!.slice(0, 200);
      if (!findingKeys.has(key)) {
        findingKeys.add(key);
        findings.push({ input, error: error instanceof Error ? (error.stack ?? text) : text });
      }
    }
    const coverage = post<Coverage>(session, 'Profiler.takePreciseCoverage');
    let fresh = false;
    for (const script of coverage.result) {
      if (!target.cover.some((c) => script.url.includes(c))) continue;
      for (const fn of script.functions) {
        for (const range of fn.ranges) {
          if (range.count === 0) continue;
          const feature = `${script.url}:${range.startOffset}:${range.endOffset}:${bucket(range.count)}`;
          if (!seen.has(feature)) {
            seen.add(feature);
            fresh = true;
          }
        }
      }
    }
    return fresh;
  };

  let executions = 0;
  for (const seed of seeds.length ? seeds : [Buffer.alloc(0)]) {
    executions++;
    runOne(seed);
    corpus.push(seed);
  }
  const deadline = Date.now() + options.seconds * 1000;
  while (Date.now() < deadline && executions < (options.maxExecutions ?? Number.POSITIVE_INFINITY)) {
    const parent = corpus[random.below(corpus.length)]!;
    const child = mutate(parent, corpus, random, maxLength);
    executions++;
    if (runOne(child)) {
      corpus.push(child);
      added.push(child);
    }
  }
  post(session, 'Profiler.stopPreciseCoverage');
  session.disconnect();
  return { target: target.name, executions, features: seen.size, corpus, added, findings };
}

/** A stable name for a corpus or finding file. */
export function inputName(input: Buffer): string {
  return createHash('sha1').update(input).digest('hex').slice(0, 16);
}

import { AlexnetStreamError, UsageError } from '@alexnet-stream/core';

/** A peer died or went silent: the whole group stops (exit code 1), naming the lost rank. */
export class PeerLostError extends AlexnetStreamError {
  constructor(
    readonly lostRank: number,
    readonly detail: string,
  ) {
    super(`lost worker rank ${lostRank} (${detail}); all workers stop. The last checkpoint is intact: restart every worker with --resume to continue`, {
      code: 'ERR_PEER_LOST',
    });
  }
}

/** Workers that cannot form a group (mismatched config/spec, bad world size, unbindable port): exit code 2. */
export class RendezvousError extends UsageError {
  constructor(message: string) {
    super(message, { code: 'ERR_RENDEZVOUS' });
  }
}

/** Ranks disagree about what they are doing (different tensor sizes or call order): a bug, exit code 1. */
export class ProtocolError extends AlexnetStreamError {
  constructor(message: string) {
    super(message, { code: 'ERR_GROUP_PROTOCOL' });
  }
}

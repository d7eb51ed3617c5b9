import type { ReactNode } from "react";

import type { ChannelFrame, ConnectionState, Kuda, KudaOptions } from "../src/index.js";

export interface KudaProviderProps {
  /** A client made by the app; or `options` to let the provider make one. */
  client?: Kuda;
  options?: KudaOptions;
  /** Connect on mount and close on unmount (default true). */
  manage?: boolean;
  children?: ReactNode;
}

export declare function KudaProvider(props: KudaProviderProps): ReactNode;
export declare function useKuda(): Kuda;
export declare function useConnectionState(): ConnectionState;
export declare function useChannel<S, D = any>(
  channel: string | null | undefined,
  reducer: (state: S, frame: ChannelFrame<D>) => S,
  initialState: S,
  options?: { since?: number },
): S;
export declare function usePresence(channel: string | null | undefined): readonly number[];

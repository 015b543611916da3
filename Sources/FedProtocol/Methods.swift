import FedHashing
import FedWire
/// Wire names of the methods in proto/fedcoord.proto's service blocks.
public enum Methods {
    public static let join = "/fedcoord.v1.Coordinator/Join"
    public static let announceUpdate = "/fedcoord.v1.Coordinator/AnnounceUpdate"
    public static let reportData = "/fedcoord.v1.Coordinator/ReportData"
    public static let train = "/fedcoord.v1.Agent/Train"
    public static let pullUpdate = "/fedcoord.v1.Agent/PullUpdate"
    public static let cancel = "/fedcoord.v1.Agent/Cancel"
    public static let evaluate = "/fedcoord.v1.Agent/Evaluate"
    public static let statistics = "/fedcoord.v1.Agent/Statistics"
    public static let secureSetup = "/fedcoord.v1.Agent/SecureSetup"
    public static let shareKeys = "/fedcoord.v1.Agent/ShareKeys"
    public static let maskedInput = "/fedcoord.v1.Agent/MaskedInput"
    public static let unmask = "/fedcoord.v1.Agent/Unmask"
}

pub struct MafClient; pub struct RetrievedKey;

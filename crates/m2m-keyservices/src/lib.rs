pub mod mef;
